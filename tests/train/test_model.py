"""EGES model, pairs and negative sampling."""

import itertools

import numpy as np
import pytest
import torch

from eges.training.loss import pair_mask, walk_loss
from eges.training.model import EGES, gather_bags, rows
from eges.training.sampling import AliasSampler

# 6 items, 2 fields: field 0 single-valued (3 values), field 1 multi-valued (4 values)
FIELD0 = [[], [1], [2], [1], [3], [], [2]]  # per item_idx 0..6 (0 = padding)
FIELD1 = [[], [1, 2], [], [3], [1, 4], [], [2, 3, 4]]


def csr(lists):
    lengths = [len(x) for x in lists]
    offsets = torch.tensor([0] + list(itertools.accumulate(lengths)), dtype=torch.long)
    values = torch.tensor([v for x in lists for v in x], dtype=torch.long)
    return offsets, values


def make(mode="eges", dim=8, sparse=False):
    (o0, v0), (o1, v1) = csr(FIELD0), csr(FIELD1)
    torch.manual_seed(0)
    return EGES(6, [3, 4], [o0, o1], [v0, v1], embedding_dim=dim, mode=mode, sparse=sparse)


def test_gather_bags_matches_python():
    offsets, values = csr(FIELD1)
    ids = torch.tensor([4, 0, 6, 2, 1, 4])
    flat, bag_offsets = gather_bags(ids, offsets, values)
    ends = list(bag_offsets[1:].tolist()) + [len(flat)]
    got = [flat[a:b].tolist() for a, b in zip(bag_offsets.tolist(), ends)]
    assert got == [FIELD1[i] for i in ids.tolist()]


def test_shapes_and_weights():
    model = make()
    ids = torch.tensor([1, 2, 5, 6])
    assert model(ids).shape == (4, 8)
    w = model.source_weights(ids)
    assert w.shape == (4, 3)
    torch.testing.assert_close(w.sum(1), torch.ones(4))
    # item 2 has no field-1 value, item 5 none at all: their weight is 0, not diluted
    assert w[1, 2] == 0 and w[2, 1] == 0 and w[2, 2] == 0 and w[2, 0] == 1
    torch.testing.assert_close(w[0], torch.full((3,), 1 / 3))  # A starts at 0: equal weights


def test_forward_is_the_weighted_mean_of_the_sources():
    model = make()
    with torch.no_grad():
        model.attention.weight[6] = torch.tensor([0.0, 1.0, 2.0])
    h = model(torch.tensor([6]))[0]
    own = model.item.weight[6]
    f0 = model.side[0].weight[2]
    f1 = model.side[1].weight[[2, 3, 4]].mean(0)
    a = torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0)
    torch.testing.assert_close(h, a[0] * own + a[1] * f0 + a[2] * f1)


def test_ges_uses_equal_weights_and_bge_the_item_only():
    ges = make("ges")
    assert ges.attention is None
    h = ges(torch.tensor([3]))[0]
    torch.testing.assert_close(
        h, (ges.item.weight[3] + ges.side[0].weight[1] + ges.side[1].weight[3]) / 3
    )
    bge = make("bge")
    assert len(bge.side) == 0 and bge.attention is None
    torch.testing.assert_close(bge(torch.tensor([3]))[0], bge.item.weight[3])
    with pytest.raises(ValueError, match="BGE"):
        bge.cold_start([[torch.tensor([1])]])


def test_cold_start_is_the_mean_of_side_info_embeddings():
    model = make()
    v = model.cold_start(
        [
            [torch.tensor([2]), torch.tensor([1, 4])],
            [torch.tensor([], dtype=torch.long), torch.tensor([3])],
            [torch.tensor([], dtype=torch.long)] * 2,
        ]
    )
    expected0 = (model.side[0].weight[2] + model.side[1].weight[[1, 4]].mean(0)) / 2
    torch.testing.assert_close(v[0], expected0)
    torch.testing.assert_close(v[1], model.side[1].weight[3])
    assert torch.count_nonzero(v[2]) == 0
    # the catalogue variant agrees with the explicit one
    torch.testing.assert_close(
        model.cold_start_items(torch.tensor([4]))[0],
        model.cold_start([[torch.tensor([3]), torch.tensor([1, 4])]])[0],
    )


def brute_pairs(walks, window):
    out = []
    for row in walks:
        for i, c in enumerate(row):
            for j, x in enumerate(row):
                if i != j and abs(i - j) <= window and c > 0 and x > 0:
                    out.append((c, x))
    return sorted(out)


def test_pair_mask_is_every_pair_within_the_window():
    walks = torch.tensor([[1, 2, 3, 4, 5, 6, 7], [3, 4, 5, 0, 0, 0, 0], [6, 6, 0, 0, 0, 0, 0]])
    for window in (1, 2, 5, 10):
        b, i, j = torch.nonzero(pair_mask(walks, window), as_tuple=True)
        got = sorted(zip(walks[b, i].tolist(), walks[b, j].tolist()))
        assert got == brute_pairs(walks.tolist(), window)


LOSS_CASES = [
    ("eges", "position", False),
    ("ges", "position", False),
    ("bge", "position", False),
    ("eges", "walk", False),
    ("bge", "walk", False),
    ("eges", "position", True),
    ("bge", "walk", True),
]


@pytest.mark.parametrize(
    "mode, per, prior, kernel, sparse",
    [(*case, "torch", False) for case in LOSS_CASES]
    # the C step (negatives per position only), dense and sparse gradients
    + [
        (*case, "c", sparse)
        for case in LOSS_CASES
        if case[1] == "position"
        for sparse in (False, True)
    ],
)
def test_walk_loss_is_the_mean_over_pairs_of_skip_gram_with_shared_negatives(
    mode, per, prior, kernel, sparse
):
    model = make(mode, sparse=sparse)
    with torch.no_grad():  # Z starts at zero; A at zero: make both non-trivial
        model.context.weight.normal_()
        if model.attention is not None:
            model.attention.weight.normal_()
    walks = torch.tensor([[1, 3, 4, 6, 2], [6, 4, 0, 0, 0], [5, 0, 0, 0, 0]])
    rows = walks.numel() if per == "position" else walks.shape[0]
    negs = torch.randint(1, 7, (rows, 3), generator=torch.Generator().manual_seed(1))

    def draw(shape):
        assert shape == negs.shape
        return negs

    loss, pairs = walk_loss(model, walks, 2, draw, 3, per, prior_offset=prior, kernel=kernel)
    # reference: a loop over pairs; position p's negatives are negs[p] (per position) or
    # negs[its walk] (per walk) for each of its pairs; with the prior offset every score is
    # shifted by log(1/K), K = 3
    flat, length, terms = walks.reshape(-1), walks.shape[1], []
    h, z = model(flat), model.context.weight
    shift = -np.log(3) if prior else 0.0
    for p, q in itertools.permutations(range(walks.numel()), 2):
        if p // length == q // length and abs(p - q) <= 2 and flat[p] > 0 and flat[q] > 0:
            row = p if per == "position" else p // length
            neg = torch.nn.functional.logsigmoid(-(z[negs[row]] @ h[p] + shift)).sum()
            terms.append(torch.nn.functional.logsigmoid(h[p] @ z[flat[q]] + shift) + neg)
    assert pairs == len(terms) == 2 * (4 + 3) + 2
    reference = -torch.stack(terms).mean()
    torch.testing.assert_close(loss, reference)
    # the gradient of every table too (per position it is written out by hand in loss.py)
    params = [p for p in model.parameters() if p.requires_grad]
    got = torch.autograd.grad(loss, params, allow_unused=True)
    want = torch.autograd.grad(reference, params, allow_unused=True)
    for name, g, w in zip([n for n, p in model.named_parameters() if p.requires_grad], got, want):
        if w is None:
            assert g is None or torch.count_nonzero(g.to_dense()) == 0, name
        else:
            torch.testing.assert_close(g.to_dense(), w.to_dense(), msg=name)


def test_item_dropout_leaves_out_the_items_own_vector_where_it_has_side_info():
    model = make("eges")
    with torch.no_grad():
        model.attention.weight.normal_()
    ids = torch.tensor([1, 2, 4, 5, 6])  # item 5 has no side information
    drop = torch.tensor([True, False, True, True, True])
    h, full = model(ids, drop), model(ids)
    # dropped rows: the attention-weighted mean of the fields alone (weights renormalised)
    for row in (0, 2, 4):
        v = int(ids[row])
        logits = model.attention.weight[v]
        present = [i for i, f in enumerate((FIELD0, FIELD1)) if f[v]]
        w = torch.softmax(logits[[1 + i for i in present]], 0)
        ref = sum(
            w[k] * model.side[i].weight[(FIELD0, FIELD1)[i][v]].mean(0)
            for k, i in enumerate(present)
        )
        torch.testing.assert_close(h[row], ref)
    torch.testing.assert_close(h[1], full[1])  # not dropped
    torch.testing.assert_close(h[3], full[3])  # nothing else to use: keeps its own vector
    torch.testing.assert_close(h[3], model.item.weight[5])


def test_item_dropout_in_the_loss_drops_about_its_share_of_positions():
    model = make("ges")
    walks = torch.tensor([[1, 2, 3, 4, 6]] * 400)  # every item has side information
    seen = []
    original = model.forward

    def spy(ids, drop=None):
        seen.append(drop)
        return original(ids, drop)

    model.forward = spy
    walk_loss(
        model, walks, 2, lambda shape: torch.ones(shape, dtype=torch.long), 2, item_dropout=0.3
    )
    assert seen[0] is not None and abs(seen[0].float().mean().item() - 0.3) < 0.03
    walk_loss(model, walks, 2, lambda shape: torch.ones(shape, dtype=torch.long), 2)
    assert seen[1] is None


@pytest.mark.parametrize("optimizer, sparse", [("adam", False), ("sparse_adam", True)])
def test_attention_side_item_and_context_tables_all_learn(optimizer, sparse):
    model = make(sparse=sparse)
    walks = torch.tensor([[1, 3, 4, 6], [6, 4, 1, 3]])
    sampler = AliasSampler(np.array([0, 5, 1, 4, 3, 0, 2]))
    opt = (
        torch.optim.SparseAdam(list(model.parameters()), lr=0.1)
        if sparse
        else torch.optim.Adam(model.parameters(), lr=0.1)
    )
    # the context table starts at zero: take two steps so every table's gradient is non-zero
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(2):
        opt.zero_grad()
        loss, pairs = walk_loss(model, walks, 2, sampler, 3)
        loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is not None, f"{name} got no gradient"
        opt.step()
    assert pairs == 2 * 2 * (3 + 2)
    for name, p in model.named_parameters():
        assert not torch.equal(before[name], p.detach()), f"{name} did not change"
    assert {n.split(".")[0] for n, _ in model.named_parameters()} == {
        "item",
        "side",
        "attention",
        "context",
    }


def test_negative_sampler_follows_unigram_to_the_075():
    freq = np.array([0, 1, 10, 100, 1000, 0, 50])  # item 0 = padding, item 5 never walked
    sampler = AliasSampler(freq, 0.75)
    gen = torch.Generator().manual_seed(0)
    n = 400_000
    draws = sampler((n,), generator=gen)
    counts = np.bincount(draws.numpy(), minlength=len(freq))
    expected = np.where(freq > 0, freq**0.75, 0)
    expected = expected / expected.sum()
    assert counts[0] == 0 and counts[5] == 0
    # binomial sd <= sqrt(0.25 / n) = 0.0008; 0.004 is 5 sd
    np.testing.assert_allclose(counts / n, expected, atol=0.004)
    assert sampler((3, 4)).shape == (3, 4)


def test_cold_start_ignores_values_no_trained_item_carries():
    model = make()
    # items 1, 2, 3 occur in the walks; 4 and 6 are cold. Field-0 value 3 and field-1 value 4
    # appear only on cold items: never trained.
    model.mark_trained_values(torch.tensor([0, 5, 2, 1, 0, 0, 0]))
    assert model.side_trained_0.tolist() == [False, True, True, False]
    assert model.side_trained_1.tolist() == [False, True, True, True, False]
    with torch.no_grad():
        # item 4: field 0 {3} untrained -> left out; field 1 {1, 4} -> only 1
        torch.testing.assert_close(
            model.cold_start_items(torch.tensor([4]))[0], model.side[1].weight[1]
        )
        # item 6: field 0 {2}, field 1 {2, 3, 4} -> {2, 3}
        expect = (model.side[0].weight[2] + model.side[1].weight[[2, 3]].mean(0)) / 2
        torch.testing.assert_close(model.cold_start_items(torch.tensor([6]))[0], expect)
        # the list API agrees, and an item with only untrained values gets a zero vector
        got = model.cold_start(
            [[torch.tensor([2]), torch.tensor([2, 3, 4])], [torch.tensor([3]), torch.tensor([4])]]
        )
        torch.testing.assert_close(got[0], expect)
        assert got[1].abs().sum() == 0
    # the mask is saved with the model (export/load_model keep it)
    assert "side_trained_0" in model.state_dict()


def test_rows_matches_embedding_values_and_gradients_padding_included():
    torch.manual_seed(0)
    table = torch.nn.Embedding(7, 4, padding_idx=0)
    ids = torch.tensor([[1, 3, 3, 0], [6, 0, 1, 1]])
    grad = torch.randn(2, 4, 4)
    expected = table(ids)
    expected.backward(grad)
    want = table.weight.grad.clone()
    table.weight.grad = None
    got = rows(table, ids)
    got.backward(grad)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(table.weight.grad, want)
    assert torch.count_nonzero(table.weight.grad[0]) == 0
