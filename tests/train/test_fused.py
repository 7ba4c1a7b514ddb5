"""The C training step (eges/training/fused.py): the PyTorch form's loss and gradients on
batches like the trainer's, the same result on any number of threads, its build cache, and a
clean fallback where no compiler works."""

import ctypes
import logging
import os
import stat
import subprocess
import threading

import numpy as np
import pytest
import torch

from eges.config import TrainConfig
from eges.training import fused
from eges.training.loss import walk_loss
from eges.training.model import EGES
from eges.training.sampling import AliasSampler


def side_info(items: int, fields: tuple[int, ...], seed: int = 0):
    """Per field 0-4 values per item (some items without any), as CSR offsets and values."""
    gen = torch.Generator().manual_seed(seed)
    offsets, values = [], []
    for size in fields:
        lengths = torch.randint(0, 5, (items + 1,), generator=gen)
        lengths[0] = 0
        offsets.append(torch.cat([torch.zeros(2, dtype=torch.long), lengths.cumsum(0)])[:-1])
        values.append(torch.randint(1, size + 1, (int(lengths.sum()),), generator=gen))
    return offsets, values


def catalogue(items=300, fields=(12, 40, 200), dim=32, mode="eges", sparse=False, seed=0):
    """A random catalogue (:func:`side_info`)."""
    offsets, values = side_info(items, fields, seed)
    torch.manual_seed(seed)
    model = EGES(items, list(fields), offsets, values, dim, mode, sparse=sparse)
    with torch.no_grad():  # Z and A start at zero: make every term non-trivial
        model.context.weight.normal_(0, 0.2)
        if model.attention is not None:
            model.attention.weight.normal_()
    return model


def batch(items=300, walks=64, length=12, seed=1):
    """Walks with padded tails and some single-item walks (no pairs)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randint(1, items + 1, (walks, length), generator=gen)
    ends = torch.randint(1, length + 1, (walks,), generator=gen)
    return w * (torch.arange(length)[None] < ends[:, None])


def loss_and_grads(model, walks, kernel, dropout=0.0, seed=7):
    sampler = AliasSampler(np.r_[0, np.arange(1, model.num_items + 1)])
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same dropout draws and negatives for both forms
    loss, pairs = walk_loss(
        model, walks, 3, sampler, 5, item_dropout=dropout, prior_offset=True, kernel=kernel
    )
    (loss * 2.5).backward()  # an incoming gradient other than 1
    grads = {n: p.grad.to_dense() for n, p in model.named_parameters() if p.grad is not None}
    return loss.item(), pairs, grads


@pytest.mark.parametrize("mode", ["eges", "ges", "bge"])
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("dropout", [0.0, 0.4])
def test_c_step_equals_the_pytorch_form(mode, sparse, dropout):
    model = catalogue(mode=mode, sparse=sparse)
    walks = batch()
    ref_loss, ref_pairs, ref = loss_and_grads(model, walks, "torch", dropout)
    loss, pairs, got = loss_and_grads(model, walks, "c", dropout)
    assert pairs == ref_pairs > 0
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    assert got.keys() == ref.keys()
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-4, atol=1e-7, msg=name)
    if sparse:  # one gradient row per distinct row, padding left out
        g = model.context.weight.grad
        rows = g._indices()[0].tolist()
        assert g.is_sparse and len(rows) == len(set(rows)) and 0 not in rows


@pytest.mark.parametrize("sparse", [False, True])
def test_threads_do_not_change_the_result(sparse):
    dll = fused.load()
    # a serial build would pass the comparison below without running a second thread
    assert dll.flavour.threaded and dll.eges_threaded() == 1, dll.flavour
    model, walks = catalogue(sparse=sparse), batch(walks=256)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3, 5):
            torch.set_num_threads(threads)
            results.append(loss_and_grads(model, walks, "c", 0.2))
    finally:
        torch.set_num_threads(before)
    for loss, pairs, grads in results[1:]:
        assert (loss, pairs) == results[0][:2]
        for name, g in grads.items():
            assert torch.equal(g, results[0][2][name]), name


def serial_build(where):
    """The kernel built without OpenMP into ``where``."""
    flavour = fused.flavours("cpu", openmp=False)[0]
    assert not flavour.threaded
    return fused._build(fused._compiler(), where / "serial.so", flavour)


def test_a_build_without_openmp_gives_the_same_result(tmp_path, monkeypatch):
    model, walks = catalogue(), batch(walks=128)
    threaded = loss_and_grads(model, walks, "c", 0.2)
    serial = serial_build(tmp_path)
    assert serial.eges_threaded() == 0
    assert not hasattr(serial, "GOMP_parallel")  # no OpenMP runtime behind it
    monkeypatch.setattr(fused, "load", lambda: serial)
    loss, pairs, grads = loss_and_grads(model, walks, "c", 0.2)
    assert (loss, pairs) == threaded[:2]
    for name, g in grads.items():
        assert torch.equal(g, threaded[2][name]), name


def test_auto_passes_over_a_one_thread_build_when_torch_runs_several(tmp_path, monkeypatch):
    serial = serial_build(tmp_path)
    monkeypatch.setattr(fused, "load", lambda: serial)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert "one thread" in fused.unusable_reason("auto")
        assert fused.unusable_reason("c") is None  # asked for: it runs
        torch.set_num_threads(1)
        assert fused.unusable_reason("auto") is None
    finally:
        torch.set_num_threads(before)
    model, walks = catalogue(), batch()
    assert not fused.usable(model, walks, "auto") or torch.get_num_threads() == 1


def test_the_build_is_cached_per_source_and_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("EGES_KERNEL_CACHE", str(tmp_path))
    fused.load.cache_clear()
    try:
        assert fused.load() is not None
        built = list(tmp_path.glob("eges_kernel_*.so"))
        assert len(built) == 1
        fused.load.cache_clear()
        stamp = built[0].stat().st_mtime_ns
        assert fused.load() is not None
        assert built[0].stat().st_mtime_ns == stamp  # loaded, not rebuilt
        assert not list(tmp_path.glob(".*.tmp"))
        # another source: another build beside the first
        changed = tmp_path / "src" / "kernel.c"
        changed.parent.mkdir()
        changed.write_text(fused.SOURCE.read_text() + "\n/* changed */\n")
        monkeypatch.setattr(fused, "SOURCE", changed)
        fused.load.cache_clear()
        assert fused.load() is not None
        assert len(list(tmp_path.glob("eges_kernel_*.so"))) == 2
    finally:
        fused.load.cache_clear()


def test_the_cache_key_follows_source_compiler_flags_and_cpu():
    native, portable = fused.flavours("cpu A")[0], fused.flavours("cpu A")[1]
    assert "-march=native" in native.flags or "-mcpu=native" in native.flags
    assert not any("native" in f for f in portable.flags)
    key = fused.cache_key(b"src", "cc", "12", native, "cpu A")
    assert fused.cache_key(b"src2", "cc", "12", native, "cpu A") != key
    assert fused.cache_key(b"src", "cc", "13", native, "cpu A") != key
    assert fused.cache_key(b"src", "cc", "12", portable, "cpu A") != key
    assert fused.cache_key(b"src", "cc", "12", native, "cpu B") != key  # a build for this CPU
    # a build for any CPU of the architecture is shared between CPUs
    assert fused.cache_key(b"src", "cc", "12", portable, "cpu A") == fused.cache_key(
        b"src", "cc", "12", portable, "cpu B"
    )


def test_an_unknown_cpu_gets_no_build_for_this_cpu_only():
    for flavour in fused.flavours(None):
        assert not any(f.endswith("=native") for f in flavour.flags), flavour
    assert fused.flavours(None)[0].threaded


def _planted(where, body):
    """A shared library from C ``body``, under the name load() computes for the best flavour."""
    cc, cpu = fused._compiler(), fused._cpu_key()
    flavour = fused.flavours(cpu)[0]
    key = fused.cache_key(fused.SOURCE.read_bytes(), cc, fused._compiler_version(cc), flavour, cpu)
    lib = where / f"eges_kernel_{key}.so"
    src = where.parent / "planted.c"
    src.write_text(body)
    subprocess.run([cc, "-shared", "-fPIC", str(src), "-o", str(lib)], check=True)
    return lib


PLANT = """
#include <stdio.h>
__attribute__((constructor)) static void planted(void) {
    FILE *f = fopen("%s", "w");
    if (f) { fputs("ran", f); fclose(f); }
}
"""


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o730, 0o702])
def test_a_cache_writable_by_others_is_refused_and_nothing_in_it_runs(
    tmp_path, monkeypatch, caplog, mode
):
    cache = tmp_path / "cache"
    cache.mkdir()
    marker = tmp_path / "ran"
    _planted(cache, PLANT % marker)
    cache.chmod(mode)
    monkeypatch.setenv("EGES_KERNEL_CACHE", str(cache))
    fused.load.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="eges.training.fused"):
            assert fused.load() is None
        assert "writable by group or others" in caplog.text
        assert not marker.exists()  # the planted library's constructor never ran
        assert fused.unusable_reason("auto") is not None
    finally:
        fused.load.cache_clear()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to another user")
def test_a_cache_of_another_user_or_below_a_shared_directory_is_refused(tmp_path, monkeypatch):
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    os.chown(other, 65534, 65534)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # world-writable without the sticky bit: cache can be swapped
    (shared / "cache").mkdir(mode=0o700)
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)  # as /tmp: others cannot rename what is not theirs
    readable = tmp_path / "readable"  # 0755, as the default umask made it before
    readable.mkdir()
    readable.chmod(0o755)
    group = tmp_path / "group"  # group-writable, the user's own group (umask 002 systems)
    group.mkdir()
    group.chmod(0o775)
    other_group = tmp_path / "other-group"
    other_group.mkdir()
    other_group.chmod(0o775)
    os.chown(other_group, os.geteuid(), 65534)
    cases = (
        (other, True),
        (shared / "cache", True),
        (sticky / "cache", False),
        (readable, False),
        (group / "cache", False),
        (other_group / "cache", True),
    )
    for where, refused in cases:
        monkeypatch.setenv("EGES_KERNEL_CACHE", str(where))
        if refused:
            with pytest.raises(fused.UnsafeCacheError):
                fused.private_dir(where)
        else:
            assert fused.private_dir(where) == where.resolve()
            if where.name == "cache":
                assert stat.S_IMODE(where.stat().st_mode) == 0o700  # created private
    # missing directories above the cache are created private too, whatever the umask
    old = os.umask(0o002)
    try:
        fused.private_dir(tmp_path / "new" / "deeper" / "cache")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new" / "deeper").stat().st_mode) == 0o700


def test_a_foreign_library_under_the_computed_name_is_rebuilt_not_fatal(tmp_path, monkeypatch):
    """A file of the user's own that is not this kernel (an old or damaged build): ignored and
    built again, instead of an AttributeError that killed the trainer."""
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    lib = _planted(cache, "int unrelated(void) { return 1; }\n")
    monkeypatch.setenv("EGES_KERNEL_CACHE", str(cache))
    fused.load.cache_clear()
    try:
        dll = fused.load()
        assert dll is not None and dll.eges_step_size() == ctypes.sizeof(fused._Step)
        # the best flavour, rebuilt in place (not the loader's cached handle of the foreign
        # file under the same name, which sent the process to a lesser flavour)
        assert dll.flavour == fused.flavours(fused._cpu_key())[0]
        assert lib.exists()
    finally:
        fused.load.cache_clear()


def test_builds_side_by_side_in_one_process_do_not_collide(tmp_path):
    """Builders with the same pid (threads here; containers on nodes sharing a cache) once
    shared one temporary file name and failed at the rename, or renamed a partial file."""
    flavour = fused.flavours(fused._cpu_key())[0]
    out = tmp_path / "eges_kernel_same.so"
    errors = []

    def build():
        try:
            fused._build(fused._compiler(), out, flavour)
        except Exception as e:  # noqa: BLE001 - any failure fails the test
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert fused._open(out, flavour) is not None
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left


def test_without_a_working_compiler_auto_falls_back_and_c_is_refused(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("EGES_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "false")  # a "compiler" that fails every build
    fused.load.cache_clear()
    try:
        model, walks = catalogue(), batch()
        with caplog.at_level(logging.WARNING, logger="eges.training.fused"):
            loss, pairs, grads = loss_and_grads(model, walks, "auto")
        assert "PyTorch form" in caplog.text and "could not compile" in caplog.text
        ref_loss, ref_pairs, _ = loss_and_grads(model, walks, "torch")
        assert (loss, pairs) == (ref_loss, ref_pairs)
        with pytest.raises(RuntimeError, match="train.kernel=c needs"):
            loss_and_grads(model, walks, "c")
        assert not list(tmp_path.iterdir())  # nothing half-built left behind
    finally:
        fused.load.cache_clear()


def test_the_trainer_refuses_kernel_c_where_it_cannot_run():
    from eges.config import ConfigError
    from eges.train import _check_kernel

    _check_kernel(TrainConfig(kernel="c"), gpu=False)  # compiles here: accepted
    with pytest.raises(ConfigError, match="negatives_per is walk"):
        _check_kernel(TrainConfig(kernel="c", negatives_per="walk"), gpu=False)
    with pytest.raises(ConfigError, match="GPU"):
        _check_kernel(TrainConfig(kernel="c"), gpu=True)
    with pytest.raises(ConfigError, match="precision"):
        _check_kernel(TrainConfig(kernel="c", precision="bf16-mixed"), gpu=False)
    _check_kernel(TrainConfig(kernel="auto", negatives_per="walk"), gpu=False)  # falls back


def test_indices_outside_the_tables_are_refused_before_the_c_step_runs():
    model = catalogue(items=50)
    walks = batch(items=50)
    bad = walks.clone()
    bad[0, 0] = 51
    with pytest.raises(IndexError, match="walk item"):
        walk_loss(model, bad, 3, lambda s: torch.ones(s, dtype=torch.long), 5, kernel="c")
    with pytest.raises(IndexError, match="negative item"):
        walk_loss(model, walks, 3, lambda s: torch.zeros(s, dtype=torch.long), 5, kernel="c")
    model.side_values_1[0] = 41  # field 1 has 40 values (1..40)
    model._side_rows_checked = False
    with pytest.raises(IndexError, match="field 1"):
        walk_loss(model, walks, 3, lambda s: torch.ones(s, dtype=torch.long), 5, kernel="c")


def test_without_grad_mode_no_gradient_is_computed_and_double_backward_is_refused():
    model, walks = catalogue(), batch()
    sampler = AliasSampler(np.r_[0, np.ones(model.num_items)])
    with torch.no_grad():
        loss, _ = walk_loss(model, walks, 3, sampler, 5, kernel="c")
    assert not loss.requires_grad
    loss, _ = walk_loss(model, walks, 3, sampler, 5, kernel="c")
    (grad,) = torch.autograd.grad(loss, [model.context.weight], create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad"):
        grad.sum().backward()


def test_a_side_value_0_is_padding_as_in_the_pytorch_form():
    model, walks = catalogue(), batch()
    model.side_values_0[:5] = 0  # a value of 0 (padding): its row stays zero, gets no gradient
    _, _, ref = loss_and_grads(model, walks, "torch")
    _, _, got = loss_and_grads(model, walks, "c")
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-4, atol=1e-7, msg=name)
    assert not got["side.0.weight"][0].any()


def test_row_adam_refuses_mismatched_state_and_rows_outside_the_table():
    p, m, v = torch.zeros(10, 4), torch.zeros(10, 4), torch.zeros(10, 4)
    grad, idx = torch.ones(2, 4), torch.tensor([1, 3])
    assert fused.row_adam(p, m, v, idx, grad, (0.9, 0.999), 0.1, 1e-8)
    assert p[1].ne(0).all() and not p[0].any()
    assert not fused.row_adam(p, torch.zeros(9, 4), v, idx, grad, (0.9, 0.999), 0.1, 1e-8)
    assert not fused.row_adam(p, m, v, idx, torch.ones(3, 4), (0.9, 0.999), 0.1, 1e-8)
    with pytest.raises(IndexError, match="RowAdam"):
        fused.row_adam(p, m, v, torch.tensor([1, 10]), grad, (0.9, 0.999), 0.1, 1e-8)
