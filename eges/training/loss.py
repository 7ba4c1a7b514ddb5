"""The skip-gram negative-sampling loss of EGES (paper §2.3, eq. 8) over batches of walks.

loss = −log σ(H_vᵀ Z_u) − Σ_negatives log σ(−H_vᵀ Z_n) for every (centre v, context u) pair of
a walk, H from :class:`~eges.training.model.EGES` and Z its separate context table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from eges.training import fused
from eges.training.model import EGES, rows


def constant_model_loss(num_negatives: int) -> float:
    """The per-pair loss of the best model that gives every pair the same score.

    With one true context and K negatives per pair, a constant score s has
    loss −log σ(s) − K log σ(−s), least at σ(s) = 1/(1 + K): ln(1 + K) + K ln(1 + 1/K)
    (2.703 for K = 5). A run whose loss stays there has learned nothing about the items. With
    ``train.prior_offset`` the initial (near-zero) vectors start exactly there.
    """
    k = num_negatives
    return math.log1p(k) + k * math.log1p(1 / k)


def walk_loss(
    model: EGES,
    walks: torch.Tensor,
    window: int,
    negatives: Callable[[tuple[int, int]], torch.Tensor],
    num_negatives: int,
    negatives_per: Literal["position", "walk"] = "position",
    item_dropout: float = 0.0,
    prior_offset: bool = False,
    kernel: Literal["auto", "c", "torch"] = "torch",
) -> tuple[torch.Tensor, int]:
    """Skip-gram negative-sampling loss of every window pair of a batch of walks.

    loss = mean over pairs (v, u) of −log σ(H_vᵀ Z_u) − Σ_k log σ(−H_vᵀ Z_{n_k}), over every
    (centre, context) pair at most ``window`` positions apart in a walk, both directions,
    padding excluded.

    H and Z are computed once per walk position. The positive scores of a walk are the band
    |i − j| ∈ [1, window] of the (L, L) matrix H Zᵀ, one batched matrix product for the
    whole batch: no (pairs, D) gather and no scatter in the backward pass (a training step
    1.6–2.4× faster than gathering the pairs at L = 10 and 40, bench/results.md; the product
    costs O(L²·D) per walk, about even with per-distance slices at L = 160, so for much
    longer walks a banded form would pay).

    Negatives, ``negatives_per="position"`` (default): K draws per position, shared by that
    position's (at most 2·window) pairs: each pair still sees K independent unigram^ns_exponent
    draws, so the expected gradient is that of per-pair sampling, with 2·window times fewer
    context-row gathers. ``"walk"``: K draws per walk, shared by all its positions and
    scored with one batched product: still K unbiased draws per pair, but correlated along
    the walk; faster, and measurably worse on ml-100k (bench/results.md).

    Args:
        model: the embeddings: H is ``model(ids)``, Z is ``model.context``.
        walks: (B, L) item indices, 0 = padding.
        window: maximum distance between centre and context.
        negatives: draws a tensor of negative item indices of a given shape.
        num_negatives: K.
        negatives_per: ``position`` or ``walk`` (above).
        item_dropout: share of walk positions whose centre vector H leaves out the item's
            own embedding W⁰ (see :meth:`EGES.forward`), so that side information alone is
            trained to predict the contexts, as it must for a new item.
        prior_offset: add log(1/K) to every score inside the sigmoid: the prior odds of a
            true context against K negatives. Without it the first optimiser steps spend a
            direction shared by all vectors on those odds (every H along +c, every Z along
            −c), and on a small catalogue trained for few steps all vectors collapse onto
            it. A constant shift: rankings by H·Z are unchanged.
        kernel: ``c``: the step in one C function (:mod:`eges.training.fused`; negatives per
            position, CPU, float32); ``torch``: the PyTorch form below; ``auto``: ``c`` where
            it applies and compiles, else ``torch``.

    Returns:
        (loss, number of pairs P): the loss is the mean over the P pairs (the reduction;
        multiply by P for their sum).
    """
    offset = -math.log(num_negatives) if prior_offset else 0.0
    if kernel != "torch" and negatives_per == "position" and fused.usable(model, walks, kernel):
        return fused.walk_loss(model, walks, window, negatives, num_negatives, item_dropout, offset)
    if kernel == "c":
        raise RuntimeError(
            "train.kernel=c needs negatives per position, float32 on CPU and a C compiler; "
            "use train.kernel=auto to fall back to the PyTorch form"
        )
    b, length = walks.shape
    flat = walks.reshape(-1)  # (N,) N = B*L
    drop = (
        torch.rand(flat.shape, device=flat.device) < item_dropout
        if item_dropout > 0 and model.num_fields
        else None
    )  # (N,)
    h = model(flat, drop)  # (N, D)
    hw = h.view(b, length, -1)  # (B, L, D)
    zc = rows(model.context, walks)  # (B, L, D)
    mask = pair_mask(walks, window)  # (B, L, L): pair (i, j) scores H_{w_bi}ᵀ Z_{w_bj}
    pairs = int(mask.sum())
    per_position = mask.sum(2).reshape(-1).to(h.dtype)  # (N,) pairs centred there
    if negatives_per == "position":  # K draws per position; the gradient written out
        z_neg = rows(model.context, negatives((flat.numel(), num_negatives)))  # (N, K, D)
        loss = _PositionLoss.apply(
            hw, zc, z_neg, mask.to(h.dtype), per_position, offset, max(pairs, 1)
        )
        return loss, pairs
    # one set of K for all positions of a walk, through autograd
    z_neg = rows(model.context, negatives((b, num_negatives)))  # (B, K, D)
    neg = torch.bmm(hw, z_neg.transpose(1, 2)).reshape(flat.numel(), -1)  # (N, K)
    scores = torch.bmm(hw, zc.transpose(1, 2))  # (B, L, L)
    neg_loss = (F.logsigmoid(-(neg + offset)).sum(-1) * per_position).sum()
    return -(F.logsigmoid(scores[mask] + offset).sum() + neg_loss) / max(pairs, 1), pairs


class _PositionLoss(torch.autograd.Function):
    """The loss with K negatives per position, its gradient written out as word2vec does
    (scores -> sigmoid -> coefficients -> products with the other side), instead of an
    autograd graph over the masked scores and log-sigmoids: 1.09× the pairs/s of the autograd
    form on ml-latest-small (bench/results.md), the same loss and gradients (tested against
    the per-pair reference).

    Inputs: H (B, L, D) and Z (B, L, D) of the walk positions, Z (N, K, D) of their negatives,
    the pair mask (B, L, L) as floats, the pairs per position (N,), the prior offset, and the
    number of pairs the loss is the mean over.
    """

    @staticmethod
    def forward(ctx, hw, zc, z_neg, maskf, per_position, offset, pairs):
        with torch.autocast(hw.device.type, enabled=False):  # the inputs' precision
            scores = torch.bmm(hw, zc.transpose(1, 2)) + offset  # (B, L, L)
            h = hw.reshape(-1, hw.shape[-1])  # (N, D)
            neg = torch.bmm(z_neg, h.unsqueeze(2)).squeeze(2) + offset  # (N, K)
            pos_term = (F.logsigmoid(scores) * maskf).sum()
            neg_term = (F.logsigmoid(-neg).sum(-1) * per_position).sum()
        ctx.save_for_backward(hw, zc, z_neg, maskf, per_position, scores, neg)
        ctx.pairs = pairs
        return -(pos_term + neg_term) / pairs

    @staticmethod
    def backward(ctx, grad):
        hw, zc, z_neg, maskf, per_position, scores, neg = ctx.saved_tensors
        scale = grad / ctx.pairs
        # d/dx −log σ(x) = σ(x) − 1 (true pairs); d/dx −log σ(−x) = σ(x) (negatives)
        gs = (torch.sigmoid(scores) - 1) * maskf * scale  # (B, L, L)
        gn = torch.sigmoid(neg) * (per_position * scale).unsqueeze(1)  # (N, K)
        b, length, d = hw.shape
        h = hw.reshape(-1, d)
        grad_hw = torch.bmm(gs, zc) + torch.bmm(gn.unsqueeze(1), z_neg).view(b, length, d)
        grad_zc = torch.bmm(gs.transpose(1, 2), hw)
        grad_neg = gn.unsqueeze(2) * h.unsqueeze(1)  # (N, K, D)
        return grad_hw, grad_zc, grad_neg, None, None, None, None


def pair_mask(walks: torch.Tensor, window: int) -> torch.Tensor:
    """Which (centre i, context j) position pairs of each walk are trained: 1 ≤ |i − j| ≤ window,
    neither padding.

    Args:
        walks: (B, L) item indices, 0 = padding.
        window: maximum distance.

    Returns:
        (B, L, L) bool.
    """
    pos = torch.arange(walks.shape[1], device=walks.device)  # (L,)
    dist = (pos[:, None] - pos[None, :]).abs()  # (L, L)
    band = (dist >= 1) & (dist <= window)
    valid = walks > 0  # (B, L)
    return band & valid[:, :, None] & valid[:, None, :]
