"""Sharded tables (eges/training/sharded.py, TorchRec on gloo): two processes train as one
process would on the mean of their losses, the same model and optimiser written out in plain
PyTorch; checkpoints move between numbers of processes; each rank holds its share of the bytes."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from eges.config import ConfigError, TrainConfig
from eges.training.export import read_embeddings
from eges.training.loss import walk_loss
from eges.training.model import EGES
from eges.training.sharded import (
    ATTENTION,
    INIT_BLOCK,
    Layout,
    attention_width,
    initial_rows,
    side_table,
)
from eges.training.sharded import SHARDED_OPTIMIZER as SHARDED
from tests.train.test_fused import side_info as random_side_info
from tests.train.walkdir import make_complete_walk_dir

REPO = Path(__file__).resolve().parents[2]

pytest.importorskip("torchrec", reason="the sharded path needs torchrec (make install)")

ITEMS, FIELDS, DIM, WINDOW, K, LR, EPS, SEED = 300, (12, 40), 16, 3, 5, 0.05, 1e-8, 7
STEPS, DROPOUT, OFFSET = 3, 0.3, -math.log(5)  # the prior offset log(1/K)


def side_info():
    return random_side_info(ITEMS, FIELDS)


def walks(step: int, rank: int) -> torch.Tensor:
    """Rank ``rank``'s walks of a step: padded tails, some single-item walks."""
    gen = torch.Generator().manual_seed(1000 * step + rank)
    w = torch.randint(1, ITEMS + 1, (24, 8), generator=gen)
    ends = torch.randint(1, 9, (24,), generator=gen)
    return w * (torch.arange(8)[None] < ends[:, None])


def negatives(step: int, rank: int):
    gen = torch.Generator().manual_seed(5000 + 1000 * step + rank)
    return lambda shape: torch.randint(1, ITEMS + 1, shape, generator=gen)


def train_sharded(model, step: int, rank: int) -> None:
    torch.manual_seed(100 * step + rank)  # the item-dropout draws
    loss, _ = model.walk_loss(walks(step, rank), WINDOW, negatives(step, rank), K, DROPOUT, OFFSET)
    loss.backward()  # the fused optimiser updates the rows


def _worker(rank: int, world: int, out: str, job: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{out}/store-{job}", rank=rank, world_size=world
    )
    from eges.training.sharded import ShardedEGES

    offsets, values = side_info()
    model = ShardedEGES(ITEMS, list(FIELDS), offsets, values, DIM, "eges", LR, EPS, SEED)
    result: dict = {"bytes": model.local_bytes()}
    if job == "train":  # 2 processes, STEPS steps, a checkpoint
        for step in range(STEPS):
            train_sharded(model, step, rank)
        model.save(f"{out}/ckpt-2")
    elif job == "resume-1":  # 1 process: the 2-process checkpoint, then one more step
        model.load(f"{out}/ckpt-2")
        result["loaded"] = (model.full_tables(), model.full_optimizer_state())
        train_sharded(model, STEPS, 0)
        model.save(f"{out}/ckpt-1")
    elif job == "resume-2":  # 2 processes: the 1-process checkpoint
        model.load(f"{out}/ckpt-1")
    tables, state = model.full_tables(), model.full_optimizer_state()
    if rank == 0:
        result["tables"], result["state"] = tables, state
    torch.save(result, f"{out}/{job}-rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)  # as tests/train/test_optim.py: no interpreter shutdown under live gloo threads


def reference() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The same training in plain PyTorch: EGES from the same initial rows, each step the mean
    of the two processes' losses (their draws), FBGEMM's row-wise Adagrad written out."""
    offsets, values = side_info()
    layout = Layout(ITEMS, FIELDS, DIM, "eges")
    model = EGES(ITEMS, list(FIELDS), offsets, values, DIM, "eges")
    tables = {
        "item": model.item.weight,
        "context": model.context.weight,
        ATTENTION: model.attention.weight,
        **{side_table(i): bag.weight for i, bag in enumerate(model.side)},
    }
    with torch.no_grad():
        for name, weight in tables.items():
            weight.copy_(initial_rows(layout, name, 0, weight.shape[0], SEED)[:, : weight.shape[1]])
    state = {name: torch.zeros(w.shape[0]) for name, w in tables.items()}
    for step in range(STEPS):
        model.zero_grad(set_to_none=True)
        losses = []
        for rank in (0, 1):
            torch.manual_seed(100 * step + rank)
            losses.append(
                walk_loss(
                    model, walks(step, rank), WINDOW, negatives(step, rank), K,
                    item_dropout=DROPOUT, prior_offset=True, kernel="torch",
                )[0]
            )  # fmt: skip
        (sum(losses) / 2).backward()
        with torch.no_grad():
            for name, weight in tables.items():
                g = weight.grad
                width = attention_width(len(FIELDS)) if name == ATTENTION else g.shape[1]
                touched = g.ne(0).any(1)
                state[name][touched] += g[touched].pow(2).sum(1) / width
                weight[touched] -= LR * g[touched] / (state[name][touched].sqrt() + EPS)[:, None]
    return {n: w.detach() for n, w in tables.items()}, state


def test_initial_rows_are_the_same_however_the_table_is_cut():
    layout = Layout(INIT_BLOCK + 100, (12,), 8, "eges")
    whole = initial_rows(layout, "item", 0, INIT_BLOCK + 101, SEED)
    parts = [(0, 1000), (1000, INIT_BLOCK - 1000), (INIT_BLOCK, 101)]
    cut = torch.cat([initial_rows(layout, "item", a, n, SEED) for a, n in parts])
    assert torch.equal(whole, cut)
    assert not whole[0].any() and whole[1:].abs().max() <= 0.5 / 8 and whole[1:].std() > 0.01
    assert not initial_rows(layout, "context", 5, 10, SEED).any()  # Z starts at zero
    assert initial_rows(layout, ATTENTION, 0, 3, SEED).shape == (3, 4)  # 2 sources, padded
    other = initial_rows(layout, side_table(0), 0, 13, SEED + 1)
    assert not torch.equal(other, initial_rows(layout, side_table(0), 0, 13, SEED))
    with pytest.raises(IndexError):
        initial_rows(layout, side_table(0), 10, 5, SEED)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded")
    mp.spawn(_worker, args=(2, str(out), "train"), nprocs=2, join=True)
    mp.spawn(_worker, args=(1, str(out), "resume-1"), nprocs=1, join=True)
    mp.spawn(_worker, args=(2, str(out), "resume-2"), nprocs=2, join=True)
    return out


def test_two_processes_train_as_the_plain_pytorch_reference(runs):
    trained = torch.load(runs / "train-rank0.pt")
    ref_tables, ref_state = reference()
    layout = Layout(ITEMS, FIELDS, DIM, "eges")
    for name, ref in ref_tables.items():
        got = trained["tables"][name]
        init = initial_rows(layout, name, 0, got.shape[0], SEED)
        assert (got - init).abs().max() > 1e-3, f"{name} did not train"
        torch.testing.assert_close(got[:, : ref.shape[1]], ref, rtol=1e-5, atol=2e-7, msg=name)
        torch.testing.assert_close(
            trained["state"][name], ref_state[name], rtol=1e-4, atol=1e-9, msg=name
        )


def test_a_checkpoint_moves_from_two_processes_to_one_and_back(runs):
    two = torch.load(runs / "train-rank0.pt")
    one = torch.load(runs / "resume-1-rank0.pt")
    tables, state = one["loaded"]
    for name in two["tables"]:
        assert torch.equal(tables[name], two["tables"][name]), name
        assert torch.equal(state[name], two["state"][name]), name
    back = torch.load(runs / "resume-2-rank0.pt")
    for name in one["tables"]:
        assert torch.equal(back["tables"][name], one["tables"][name]), name
        assert torch.equal(back["state"][name], one["state"][name]), name
    assert not torch.equal(one["tables"]["item"], two["tables"]["item"])  # the step ran


def test_each_rank_holds_its_share_of_the_tables(runs):
    per_rank = [torch.load(runs / f"train-rank{r}.pt")["bytes"] for r in (0, 1)]
    layout = Layout(ITEMS, FIELDS, DIM, "eges")
    total = sum(r * w * 4 for r, w in layout.tables().values())
    assert sum(b["tables"] for b in per_rank) == total
    for b in per_rank:
        assert abs(b["tables"] - total / 2) <= 0.05 * total / 2, (b, total)
        assert b["optimizer"] > 0
    alone = torch.load(runs / "resume-1-rank0.pt")["bytes"]
    assert alone["tables"] == total


EXPORT_ITEMS = 400  # walked items of the export's walk output (and 6 never walked)


def _export_worker(rank: int, world: int, out: str) -> None:
    """Train the walk output's items a few steps on sharded tables and export them as parts
    (each rank its rows); rank 0 also exports the same tables gathered whole, as the
    replicated path would (``RUN/export`` of ``ref``)."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{out}/store-export", rank=rank, world_size=world
    )
    from eges.config import from_dict
    from eges.training.export import export_run
    from eges.training.items import load_items
    from eges.training.parts import export_partitioned
    from eges.training.sampling import walk_frequencies
    from eges.training.sharded import ShardedEGES

    walk_dir = Path(out) / "walks"
    items = load_items(walk_dir)
    counts = walk_frequencies(sorted((walk_dir / "walks").glob("*.parquet")), items.num_items)
    model = ShardedEGES(
        items.num_items, items.vocab_sizes, items.offsets, items.values, DIM, "eges", LR,
        EPS, SEED,
    )  # fmt: skip
    for step in range(STEPS):
        gen = torch.Generator().manual_seed(1000 * step + rank)
        w = torch.randint(1, EXPORT_ITEMS + 1, (24, 8), generator=gen)  # walked items only
        torch.manual_seed(100 * step + rank)
        loss, _ = model.walk_loss(
            w, WINDOW, lambda shape: torch.randint(1, EXPORT_ITEMS + 1, shape, generator=gen), K,
            offset=OFFSET,
        )  # fmt: skip
        loss.backward()
    cfg = from_dict({"train": {"data": str(walk_dir), "embedding_dim": DIM, "seed": SEED}})
    export_partitioned(model, items, counts, cfg, Path(out) / "parts")
    whole = model.replicated_model(counts)
    if rank == 0:
        export_run(whole, items, counts, cfg, Path(out) / "ref")
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("parts")
    make_complete_walk_dir(out / "walks", EXPORT_ITEMS, 6)
    mp.spawn(_export_worker, args=(2, str(out)), nprocs=2, join=True)
    return out / "parts", out / "ref"


def test_each_rank_exports_its_own_rows_as_the_whole_tables_would(exported):
    from eges.training.export import (
        load_model,
        read_context,
        read_embeddings,
        read_export_manifest,
        read_export_table,
    )

    parts, ref = exported
    manifest = read_export_manifest(parts)
    assert manifest["layout"] == "parts"
    files = sorted(p.name for p in (parts / "export" / "embeddings").iterdir())
    assert files == ["part-00000.parquet", "part-00001.parquet"]
    rows = [pq.read_metadata(parts / "export" / "embeddings" / f).num_rows for f in files]
    assert [p["rows"] for p in manifest["parts"]] == rows and min(rows) > 150
    assert not (parts / "export" / "embeddings.kv").exists()
    got, vectors = read_embeddings(parts)
    want, ref_vectors = read_embeddings(ref)
    for column in ("item_idx", "item_id", "cold", "walk_count"):
        assert got[column].to_pylist() == want[column].to_pylist(), column
    assert got["cold"].to_numpy(zero_copy_only=False).sum() > 0  # cold rows exported too
    np.testing.assert_allclose(vectors, ref_vectors, rtol=1e-5, atol=1e-7)
    idx = want["item_idx"].to_numpy()
    np.testing.assert_array_equal(read_context(parts, idx), read_context(ref, idx))
    assert np.abs(read_context(parts, idx)).sum() > 0
    weights, ref_weights = read_export_table(parts, "weights"), read_export_table(ref, "weights")
    assert weights.column_names == ref_weights.column_names
    assert weights["item_id"].to_pylist() == ref_weights["item_id"].to_pylist()
    for column in weights.column_names[2:]:  # weight_item, weight_<field>...
        np.testing.assert_allclose(
            weights[column].to_numpy(), ref_weights[column].to_numpy(), rtol=1e-6, err_msg=column
        )
    ref_manifest = read_export_manifest(ref)
    assert manifest["counts"] == ref_manifest["counts"]
    for group in ("warm", "cold", "side_info_only"):
        a, b = manifest["health"][group], ref_manifest["health"][group]
        assert a["vectors"] == b["vectors"]
        assert a["mean_pairwise_cosine"] == pytest.approx(b["mean_pairwise_cosine"], abs=1e-6)
    for name in ("metadata.tsv", "projector_config.pbtxt"):
        projector = parts / "export" / "projector" / name
        assert projector.read_text() == (ref / "export" / "projector" / name).read_text()
    # cold start of a new item: the side-info tables alone
    model, meta = load_model(parts)
    ref_model, _ = load_model(ref)
    assert meta["side_only"] and model.item.weight.shape[0] == 1
    new = [
        [torch.tensor([1, 2]), torch.tensor([3])],
        [torch.tensor([2]), torch.tensor([], dtype=torch.long)],
    ]
    torch.testing.assert_close(model.cold_start(new), ref_model.cold_start(new))


def test_eges_embed_and_neighbors_serve_a_partitioned_export(exported, tmp_path):
    from eges.serving.embed import Embedder
    from eges.serving.neighbors import build_table

    parts, ref = exported
    tables = {}
    for run in (parts, ref):
        build_table(run, 10, metric="context", output=tmp_path / run.name)
        tables[run.name] = pq.read_table(tmp_path / run.name / "neighbors.parquet")
    assert tables["parts"]["neighbor_id"].to_pylist() == tables["ref"]["neighbor_id"].to_pylist()
    np.testing.assert_allclose(
        tables["parts"]["score"].to_numpy(), tables["ref"]["score"].to_numpy(), rtol=1e-5
    )
    new = [{"genre": ["Drama", "Comedy"], "year": ["1991"]}, {"genre": ["Action"]}]
    got, want = Embedder(parts), Embedder(ref)
    vectors, known = got.embed(new)
    assert all(known)
    torch.testing.assert_close(vectors, want.embed(new)[0])
    assert got.most_similar(vectors, 5) == want.most_similar(vectors, 5)


def trainer(*args: str, nproc: int = 1) -> subprocess.CompletedProcess:
    launcher = [sys.executable] + (
        ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
        if nproc > 1
        else []
    )
    return subprocess.run(
        [*launcher, str(REPO / "eges" / "train.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_the_trainer_shards_over_two_processes_and_resumes_in_one(tmp_path):
    walk_dir = make_complete_walk_dir(tmp_path / "walks", 400, 3)
    conf = tmp_path / "conf.yaml"
    conf.write_text("train: {accelerator: cpu, sharding: sharded}\n")
    run = tmp_path / "run"
    args = ["--config", str(conf), "--data", str(walk_dir), "--output", str(run)]
    sets = [
        f"--set={kv}"
        for kv in (
            "train.embedding_dim=16",
            "train.batch_size=8",
            "train.window=2",
            "train.epochs=2",
            "train.checkpoint_every_n_steps=10",
            "train.log_every_n_steps=1",
        )
    ]
    first = trainer(*args, *sets, "--set=train.max_steps=20", nproc=2)
    assert first.returncode == 0, first.stderr[-4000:]
    # tables and optimiser state of every rank beside Lightning's files, those of checkpoint
    # files Lightning removed removed too
    files = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt"))
    assert files[-1] == "step-20.ckpt"
    tables = sorted(p.name for p in (run / "checkpoints" / "tables").iterdir())
    assert tables == sorted({f"step-{f.split('step-')[1].removesuffix('.ckpt')}" for f in files})
    two = json.loads((run / "export" / "manifest.json").read_text())["training"]
    assert (two["sharding"], two["optimizer"], two["processes"]) == ("sharded", SHARDED, 2)
    total = sum(b["tables"] for b in two["shard_bytes"])
    assert all(abs(b["tables"] - total / 2) <= 0.05 * total / 2 for b in two["shard_bytes"])
    # each rank wrote its own rows
    assert [
        p["path"] for p in json.loads((run / "export" / "manifest.json").read_text())["parts"]
    ] == [
        "embeddings/part-00000.parquet",
        "embeddings/part-00001.parquet",
    ]
    before, before_vectors = read_embeddings(run)
    # the same run on one process, from the 2-process checkpoint
    # (auto follows the checkpoint: sharded, though 400 items fit any process)
    again = trainer(
        *args, *sets, "--set=train.max_steps=30", "--resume", "--set=train.sharding=auto"
    )
    assert again.returncode == 0, again.stderr[-4000:]
    one = json.loads((run / "export" / "manifest.json").read_text())["training"]
    assert (one["steps"], one["processes"], one["resumed_from"]) == (30, 1, "step-20.ckpt")
    assert one["sharding"] == "sharded"
    assert one["shard_bytes"][0]["tables"] == total
    after, after_vectors = read_embeddings(run)
    assert after.num_rows == before.num_rows == 403  # 400 walked items, 3 cold
    assert len(json.loads((run / "export" / "manifest.json").read_text())["parts"]) == 1
    moved = np.abs(after_vectors - before_vectors).max()
    assert moved > 0  # the 10 resumed steps trained
    with (run / "logs" / "metrics.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("lr-RowWiseAdagrad")]
    # the rows of the steps before the checkpoint are kept; the resumed steps go on with the
    # decayed rate (TorchRec's optimiser does not checkpoint its rate: it came back as
    # train.lr, 0.01, before the scheduler's was used)
    assert min(int(r["step"]) for r in rows) < 20
    first = min((r for r in rows if int(r["step"]) >= 20), key=lambda r: int(r["step"]))
    assert float(first["lr-RowWiseAdagrad"]) < 0.005, first
    # a sharded checkpoint is not resumed on replicated tables
    refused = trainer(
        *args, *sets, "--set=train.max_steps=40", "--resume", "--set=train.sharding=replicated"
    )
    assert refused.returncode == 2 and "train.sharding=sharded" in refused.stderr


def test_auto_shards_the_tables_when_the_replicated_ones_would_not_fit():
    from eges.training.sharded import choose_sharding, replicated_bytes

    gib = 2**30
    # W⁰, Z (128 each) and A (3 fields + the item) per row, with Adam's two moments
    assert replicated_bytes(999_999, 128, 3, "eges") == 1_000_000 * 260 * 4 * 3
    assert replicated_bytes(999_999, 128, 3, "ges") == 1_000_000 * 256 * 4 * 3
    assert choose_sharding(1_000_000, 128, 3, "eges", 12 * gib)[0] == "replicated"  # 2.9 GiB
    way, why = choose_sharding(10_000_000, 128, 3, "eges", 12 * gib)  # 29 GiB
    assert way == "sharded" and "10,000,000 items" in why and "12.0 GiB" in why
    way, why = choose_sharding(10_000_000, 128, 3, "eges", 12 * gib, blocked="no torchrec")
    assert way == "replicated" and "cannot run here (no torchrec)" in why


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"optimizer": "adam"}, "goes with train.sharding=sharded"),
        ({"negatives_per": "walk"}, "negatives per position"),
        ({"precision": "bf16-mixed"}, "32-bit precision"),
        ({"kernel": "c"}, "train.kernel=c cannot be used"),
        ({"attention_lr": 0.1}, "one learning rate"),
        ({"loss_reduction": "sum"}, "mean loss"),
    ],
)
def test_settings_the_sharded_tables_cannot_train_with_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(sharding="sharded", **overrides)
    TrainConfig(sharding="sharded", optimizer="rowwise_adagrad")
    with pytest.raises(ConfigError, match="goes with train.sharding=sharded"):
        TrainConfig(optimizer="rowwise_adagrad")
