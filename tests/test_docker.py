"""docker/ stays consistent with what CI installs and runs (no Docker engine runs here, so the
images are checked as text: same install command, same pins, entry points and configs exist)."""

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = (REPO / "docker" / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
MAKEFILE = (REPO / "Makefile").read_text()
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def stages() -> dict[str, str]:
    """Stage name -> its instructions."""
    parts = re.split(r"^FROM\s+", DOCKERFILE, flags=re.M)[1:]
    out = {}
    for part in parts:
        header, _, body = part.partition("\n")
        name = header.split(" AS ")[-1].strip() if " AS " in header else header.strip()
        out[name] = header + "\n" + body
    return out


def run_lines(text: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.strip()[4:] for line in joined.splitlines() if line.strip().startswith("RUN ")]


def test_images_install_with_the_ci_command_and_pins():
    s = stages()
    assert {"base", "spark", "train"} <= set(s)
    installs = [r for name in ("spark", "train") for r in run_lines(s[name]) if "install" in r]
    pip_installs = [r for r in run_lines(DOCKERFILE) if "pip install" in r]
    assert not pip_installs, f"install through `make install`, as CI does: {pip_installs}"
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    for stage in ("spark", "train"):
        make = [r for r in run_lines(s[stage]) if r.startswith("make install")]
        assert len(make) == 1, stage
        wanted = re.search(r"EXTRAS=(\S*)", make[0]).group(1)
        assert set(filter(None, wanted.split(","))) <= extras, make[0]
    assert installs
    # every file the install recipe depends on is in the image before `make install` runs
    needs = re.search(r"^\$\(VENV\)/\.installed:(.*)$", MAKEFILE, re.M).group(1).split()
    copied = re.search(r"^COPY (.*) \./$", DOCKERFILE, re.M).group(1).split()
    assert set(needs) | {"Makefile"} <= set(copied), (needs, copied)
    # CI runs `make test`, which installs with the same recipe and the same constraints file
    assert "make test" in (REPO / ".ci" / "run").read_text()
    assert re.search(r"^test: install", MAKEFILE, re.M)
    assert "pip install -q -c constraints.txt -e" in MAKEFILE


def test_python_and_java_versions_match_the_project():
    s = stages()
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"
    assert re.match(r"python:3\.11[-.]", s["base"].split()[0])
    assert "openjdk-17-jre" in s["spark"]  # PySpark 4 needs Java 17
    assert "python3.11/site-packages/pyspark" in s["spark"]
    constraints = (REPO / "constraints.txt").read_text()
    assert "torch==2.13.0" in constraints and "pyspark==" in constraints


def test_entry_points_and_configs_exist():
    for path in re.findall(r"\b(jobs/\S+\.py|eges/\S+\.py|conf/\S+\.yaml)", DOCKERFILE):
        assert (REPO / path).is_file(), path
    for name, svc in COMPOSE["services"].items():
        words = [str(w) for w in svc.get("entrypoint", []) + svc.get("command", [])]
        for w in words:
            for path in re.findall(r"^(jobs/\S+\.py|eges/\S+\.py|conf/\S+\.yaml)$", w):
                assert (REPO / path).is_file(), (name, path)
        build = svc.get("build")
        if build:
            assert build["target"] in stages(), name
            assert (REPO / "docker" / build["context"] / build["dockerfile"]).is_file()
    built = {svc["image"] for svc in COMPOSE["services"].values() if svc.get("build")}
    used = {svc["image"] for svc in COMPOSE["services"].values() if "image" in svc}
    assert used <= built  # every image a service runs is built here


def test_the_docs_document_the_images():
    readme = (REPO / "docs" / "cluster.md").read_text()
    assert "docker build -f docker/Dockerfile --target spark" in readme
    assert "docker build -f docker/Dockerfile --target train" in readme
    assert "docker compose -f docker/compose.yaml up" in readme


def test_the_train_image_can_build_the_c_step_and_the_package_ships_its_source():
    train = stages()["train"]
    assert re.search(r"apt-get install [^\n]*\bgcc\b", " ".join(run_lines(train))), train
    data = PYPROJECT["tool"]["setuptools"]["package-data"]["eges.training"]
    assert "kernel.c" in data and (REPO / "eges" / "training" / "kernel.c").exists()
