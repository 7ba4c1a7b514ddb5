"""The streaming walk dataset: (rank, worker) splits, equal steps, shuffling, resume, memory."""

import tracemalloc

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from eges import schema
from eges.training.dataset import WalkDataset
from tests.train.walkdir import make_walk_dir

UNEVEN = [7, 100, 33, 1, 64]  # 205 walks in shards of very different sizes


def firsts(batches) -> list[int]:
    return [int(w) for b in batches for w in b[:, 0]]


def run(ds: WalkDataset, workers: int = 0) -> list[torch.Tensor]:
    return list(DataLoader(ds, batch_size=None, num_workers=workers))


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("workers", [0, 2])
def test_ranks_and_workers_split_every_walk_once_with_equal_steps(tmp_path, world, workers):
    walk_dir = make_walk_dir(tmp_path, UNEVEN)
    seen, steps = [], []
    for rank in range(world):
        ds = WalkDataset(
            walk_dir, batch_size=8, seed=3, shuffle_buffer=16, rank=rank, world_size=world
        )
        batches = run(ds, workers)
        steps.append(len(batches))
        assert len(batches) == len(ds)
        seen += firsts(batches)
    assert len(set(steps)) == 1, f"ranks ran different step counts: {steps}"
    assert len(seen) == len(set(seen)) == (205 // world) * world  # disjoint, remainder skipped
    assert set(seen) <= set(range(1, 206))


def test_batches_are_padded_walks(tmp_path):
    walk_dir = make_walk_dir(tmp_path, [10], walk_length=6)
    batches = run(WalkDataset(walk_dir, batch_size=4, shuffle_buffer=4))
    assert [tuple(b.shape) for b in batches] == [(4, 6), (4, 6), (2, 6)]
    for b in batches:
        assert b.dtype == torch.int64
        for walk in b.tolist():
            n = 2 + (walk[0] - 1) % 5  # the length make_walk_dir gave walk g = walk[0] - 1
            assert all(x > 0 for x in walk[:n]) and all(x == 0 for x in walk[n:])


def test_each_epoch_reshuffles_deterministically(tmp_path):
    walk_dir = make_walk_dir(tmp_path, UNEVEN)
    ds = WalkDataset(walk_dir, batch_size=8, seed=1, shuffle_buffer=32)
    epoch0 = firsts(run(ds))
    assert firsts(run(ds)) == epoch0  # a restart of the same epoch: same order
    ds.set_epoch(1)
    epoch1 = firsts(run(ds))
    assert epoch1 != epoch0 and sorted(epoch1) == sorted(epoch0)
    other = WalkDataset(walk_dir, batch_size=8, seed=2, shuffle_buffer=32)
    assert firsts(run(other)) != epoch0


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_skips_exactly_the_trained_batches(tmp_path, workers):
    walk_dir = make_walk_dir(tmp_path, UNEVEN)
    ds = WalkDataset(walk_dir, batch_size=8, seed=1, shuffle_buffer=32)
    ds.set_epoch(2)
    full = run(ds, workers)
    ds.set_epoch(2, skip_batches=5)
    rest = [b.tolist() for b in run(ds, workers)]
    expected = [b.tolist() for b in full[5:]]
    if workers > 1:  # the loader restarts its round-robin at worker 0: same batches, other order
        rest, expected = sorted(rest), sorted(expected)
    assert rest == expected


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 5])
def test_worker_shares_follow_the_loaders_round_robin(tmp_path, workers):
    walk_dir = make_walk_dir(tmp_path, UNEVEN)
    ds = WalkDataset(walk_dir, batch_size=8, shuffle_buffer=16)
    n = len(ds)
    counts = [
        (ds.worker_range(w, workers)[1] - ds.worker_range(w, workers)[0] + 7) // 8
        for w in range(workers)
    ]
    assert sum(counts) == n
    # the order a DataLoader yields: in turn from every worker that still has batches
    order, left = [], list(counts)
    while any(left):
        for w in range(workers):
            if left[w]:
                order.append(w)
                left[w] -= 1
    assert order == [i % workers for i in range(n)]
    for skip in range(n + 1):
        ds.set_epoch(0, skip_batches=skip)
        assert [ds.worker_skip(w, workers) for w in range(workers)] == [
            order[:skip].count(w) for w in range(workers)
        ]


def test_refuses_a_walk_directory_without_manifest(tmp_path):
    walk_dir = make_walk_dir(tmp_path, [5])
    (walk_dir / schema.MANIFEST).unlink()
    with pytest.raises(schema.IncompleteOutputError, match="no manifest.json"):
        WalkDataset(walk_dir, batch_size=4)


def peak_bytes(walk_dir) -> int:
    ds = WalkDataset(walk_dir, batch_size=64, shuffle_buffer=256)
    tracemalloc.start()
    n = sum(b.shape[0] for b in ds)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == ds.total_walks
    return peak


def test_memory_does_not_grow_with_the_shards_read(tmp_path):
    small = peak_bytes(make_walk_dir(tmp_path / "small", [2000] * 2))
    large = peak_bytes(make_walk_dir(tmp_path / "large", [2000] * 32))  # 16x the walks
    assert large < 1.5 * small, (small, large)


def test_pad_walks_from_the_flat_values_of_a_sliced_list_array():
    import pyarrow as pa

    from eges.training.dataset import pad_walks

    walks = [[3, 1, 4], [1], [5, 9, 2, 6], [], [5, 3]]
    array = pa.array([[0, 0]] + walks, type=pa.list_(pa.int32())).slice(1)  # offsets not at 0
    got = pad_walks(array, 4)
    assert got.dtype == np.int64 and got.shape == (5, 4)
    assert got.tolist() == [w + [0] * (4 - len(w)) for w in walks]
    with pytest.raises(ValueError, match="longer than 3"):
        pad_walks(array, 3)
    with pytest.raises(ValueError, match="1 walk"):  # refused, not padded into an empty walk
        pad_walks(pa.array([[1, 2], None], type=pa.list_(pa.int32())), 4)


def test_a_missing_or_mistyped_walk_directory_is_named_as_such(tmp_path):
    with pytest.raises(schema.IncompleteOutputError, match="walk output .*nowhere does not exist"):
        schema.read_manifest(tmp_path / "nowhere")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(schema.IncompleteOutputError, match="is a file, not an output directory"):
        schema.read_manifest(tmp_path / "afile")
