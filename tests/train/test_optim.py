"""RowAdam: lazy Adam on the touched rows, equal to torch's SparseAdam in one process, and in
two gloo processes the update of the mean gradient with identical models on both."""

import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from eges.config import AUTO_SPARSE_ITEMS
from eges.training.loss import walk_loss
from eges.training.optim import RowAdam, resolve_optimizer
from eges.training.sampling import AliasSampler
from tests.train.test_model import make

WALKS = [
    torch.tensor([[1, 3, 4, 6], [6, 4, 1, 0]]),
    torch.tensor([[2, 3, 5, 0], [1, 2, 3, 4]]),
]
FREQ = np.array([0, 5, 1, 4, 3, 2, 2])


def steps(model, opt, batches, seed=0, kernel="torch"):
    """Train on ``batches``: each item a list of walk batches whose losses are averaged."""
    sampler = AliasSampler(FREQ)
    gen = torch.Generator().manual_seed(seed)
    for walks in batches:
        opt.zero_grad()
        loss = sum(
            walk_loss(model, w, 2, lambda s: sampler(s, generator=gen), 3, kernel=kernel)[0]
            for w in walks
        ) / len(walks)
        loss.backward()
        opt.step()


def params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("kernel, native", [("torch", False), ("c", True), ("torch", True)])
def test_same_steps_as_torch_sparse_adam(kernel, native):
    # native: RowAdam's rows updated in C (eges.training.fused.row_adam)
    ours, theirs = make(sparse=True), make(sparse=True)
    batches = [[WALKS[i % 2]] for i in range(6)]
    steps(ours, RowAdam(ours.parameters(), lr=0.05, native=native), batches, kernel=kernel)
    steps(theirs, torch.optim.SparseAdam(list(theirs.parameters()), lr=0.05), batches)
    a, b = params(ours), params(theirs)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-7, msg=name)
    assert not torch.equal(a["item.weight"], params(make(sparse=True))["item.weight"])


def test_only_touched_rows_change_and_padding_stays_zero():
    model = make(sparse=True)
    before = params(model)
    # items 2 and 5 are never walked; with negatives from {1, 3} only, their context rows
    # are untouched too
    sampler = AliasSampler(np.array([0, 1, 0, 1, 0, 0, 0]))
    opt = RowAdam(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        walk_loss(model, torch.tensor([[1, 3, 4, 6, 0]]), 2, sampler, 2)[0].backward()
        opt.step()
    after = params(model)
    for table in ("item.weight", "context.weight", "attention.weight"):
        assert torch.equal(after[table][[2, 5]], before[table][[2, 5]]), table
        assert not torch.equal(after[table][[1, 3]], before[table][[1, 3]]), table
    assert not after["item.weight"][0].any() and not after["context.weight"][0].any()
    assert not after["side.0.weight"][0].any()


def test_dense_gradients_and_bad_settings_are_refused():
    model = make(sparse=False)
    walk_loss(model, WALKS[0], 2, AliasSampler(FREQ), 3)[0].backward()
    with pytest.raises(TypeError, match="sparse gradients"):
        RowAdam(model.parameters()).step()
    with pytest.raises(ValueError, match="betas"):
        RowAdam(model.parameters(), betas=(0.9, 1.0))


def _rank(rank: int, out: str, kernel: str) -> None:
    torch.set_num_threads(1)
    # a file store: no TCP store thread for rank 0 to take down while rank 1 still talks to it
    dist.init_process_group("gloo", init_method=f"file://{out}/store", rank=rank, world_size=2)
    model = make(sparse=True)
    # each rank its own walks and negatives, as the trainer's ranks
    opt = RowAdam(model.parameters(), lr=0.05)
    steps(model, opt, [[WALKS[rank]]] * 4, seed=rank, kernel=kernel)
    torch.save(params(model), f"{out}/rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()
    # Leave without the interpreter's shutdown: a gloo worker thread that frees the last
    # collective's tensors takes the GIL and, if it gets it only during the shutdown, aborts the
    # process ("terminate called without an active exception"). The trainer destroys its group
    # after fit, which joins those threads; here the group outlived destroy_process_group
    # (still referenced from this training code) and 2-12 of 30 launches aborted, 0 of 40 so.
    os._exit(0)


@pytest.mark.parametrize("kernel", ["torch", "c"])
def test_two_processes_apply_the_mean_gradient_and_stay_identical(tmp_path, kernel):
    mp.spawn(_rank, args=(str(tmp_path), kernel), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for name in r0:
        assert torch.equal(r0[name], r1[name]), f"{name} differs between the ranks"
    # one process, the mean of the two ranks' losses with the same draws: the same model
    model = make(sparse=True)
    sampler = AliasSampler(FREQ)
    gens = [torch.Generator().manual_seed(r) for r in (0, 1)]
    opt = RowAdam(model.parameters(), lr=0.05)
    for _ in range(4):
        opt.zero_grad()
        loss = sum(
            walk_loss(
                model, WALKS[r], 2, lambda s, g=gens[r]: sampler(s, generator=g), 3, kernel=kernel
            )[0]
            for r in (0, 1)
        )
        (loss / 2).backward()
        opt.step()
    for name, p in params(model).items():
        torch.testing.assert_close(r0[name], p, rtol=1e-5, atol=1e-7, msg=name)


def test_auto_takes_dense_adam_for_small_catalogues_and_rowadam_for_large():
    assert resolve_optimizer("auto", 9_742) == "adam"
    assert resolve_optimizer("auto", AUTO_SPARSE_ITEMS) == "adam"
    assert resolve_optimizer("auto", AUTO_SPARSE_ITEMS + 1) == "sparse_adam"
    assert resolve_optimizer("adam", 5_000_000) == "adam"  # a choice made is kept
    assert resolve_optimizer("sgd", 10) == "sgd"


def test_a_resumed_run_keeps_the_optimiser_its_checkpoint_was_trained_with(tmp_path):
    from eges.config import ConfigError
    from eges.train import _resumed_optimizer
    from eges.training.optim import OPTIMIZER_KEY

    ckpt = tmp_path / "step-10.ckpt"
    torch.save({OPTIMIZER_KEY: "adam"}, ckpt)
    assert _resumed_optimizer(ckpt, "auto", "sparse_adam") == "adam"  # auto follows it
    assert _resumed_optimizer(ckpt, "adam", "adam") == "adam"
    with pytest.raises(ConfigError, match="trained with train.optimizer=adam"):
        _resumed_optimizer(ckpt, "sparse_adam", "sparse_adam")
    # written before the name was stored: Adam's parameter groups have amsgrad
    torch.save({"optimizer_states": [{"param_groups": [{"lr": 0.1, "amsgrad": False}]}]}, ckpt)
    assert _resumed_optimizer(ckpt, "auto", "sparse_adam") == "adam"
    torch.save({"optimizer_states": [{"param_groups": [{"lr": 0.1, "eps": 1e-8}]}]}, ckpt)
    assert _resumed_optimizer(ckpt, "auto", "sparse_adam") == "sparse_adam"


def test_fp16_with_rowadam_on_several_processes_is_refused():
    from eges.config import ConfigError
    from eges.train import _check_precision

    with pytest.raises(ConfigError, match="bf16-mixed or 32-true"):
        _check_precision("sparse_adam", 2, "16-mixed")
    _check_precision("sparse_adam", 1, "16-mixed")  # one process: nothing to disagree on
    _check_precision("sparse_adam", 2, "bf16-mixed")
    _check_precision("adam", 2, "16-mixed")
