"""The evaluation's user errors: one line, exit 2, nothing started."""

from pathlib import Path

from eges.evaluation.evaluate import main

CONF = str(Path(__file__).resolve().parents[2] / "conf" / "ml-100k.yaml")


def test_unknown_model_and_bad_values_are_named(capsys):
    assert main(["--config", CONF, "--set", "evaluate.models=[eges,word2vec]"]) == 2
    assert "evaluate.models: unknown ['word2vec']" in capsys.readouterr().err
    assert main(["--config", CONF, "--set", "split.edge_fraction=1.5"]) == 2
    assert "split.edge_fraction must be in (0, 1)" in capsys.readouterr().err
    assert main(["--config", CONF, "--set", "evaluate.tasks=[link,ranking]"]) == 2
    assert "evaluate.tasks" in capsys.readouterr().err


def test_an_existing_evaluation_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "results.json").write_text("{}")
    assert main(["--config", CONF, "--output", str(tmp_path)]) == 2
    assert "already holds an evaluation" in capsys.readouterr().err
    assert (tmp_path / "results.json").read_text() == "{}"
