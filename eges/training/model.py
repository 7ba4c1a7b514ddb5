"""EGES as a plain ``nn.Module`` (paper §2.3–2.4): usable without Lightning for export and serving.

For item v with side-information fields 1..n:

* W⁰_v — the item's own embedding; W^s_v — the embedding of its s-th field (a multi-valued field
  is the mean of its values' embeddings; a field without a value is left out);
* EGES: H_v = Σ_j exp(a_v^j) W^j_v / Σ_j exp(a_v^j) with a **per-item trainable** row a_v of
  A ∈ R^{(|V|+1)×(n+1)}; GES: the plain mean; BGE: W⁰_v alone (DeepWalk);
* skip-gram with negative sampling against a **separate context table Z**:
  loss = −log σ(H_vᵀ Z_u) − Σ_negatives log σ(−H_vᵀ Z_n) (:func:`eges.training.loss.walk_loss`);
* cold start: a new item has no W⁰ and no row of A; its vector is the mean of its side-info
  fields' embeddings (paper §3.3.2), weighted per field by :attr:`EGES.cold_weights` (equal
  unless ``train.cold_weights`` sets them).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Mode = Literal["eges", "ges", "bge"]


def gather_bags(
    ids: torch.Tensor, offsets: torch.Tensor, values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The CSR value lists of ``ids`` as (flat values, bag offsets) for ``embedding_bag``.

    Args:
        ids: (N,) item indices.
        offsets: (V + 2,) CSR offsets of one field.
        values: (nnz,) vocabulary indices.

    Returns:
        (flat (M,), bag_offsets (N,)) where bag i is flat[bag_offsets[i]:bag_offsets[i+1]].
    """
    starts = offsets[ids]  # (N,)
    lengths = offsets[ids + 1] - starts  # (N,)
    bag_offsets = torch.cumsum(lengths, 0) - lengths  # (N,)
    total = int(lengths.sum())
    # position inside the flat output -> position in `values`
    shift = torch.repeat_interleave(starts - bag_offsets, lengths, output_size=total)  # (M,)
    flat = values[torch.arange(total, device=ids.device) + shift]  # (M,)
    return flat, bag_offsets


class _Rows(torch.autograd.Function):
    """``weight[ids]`` whose backward adds the rows with ``index_add_``.

    Same result as ``F.embedding``; on CPU its dense backward (sort, then accumulate) takes about
    twice as long as ``index_add_`` for the rows of a training step (bench/results.md, "gathers
    with an index_add_ backward").
    """

    @staticmethod
    def forward(
        ctx, weight: torch.Tensor, ids: torch.Tensor, padding_idx: int | None
    ) -> torch.Tensor:
        ctx.save_for_backward(ids)
        ctx.rows, ctx.padding_idx = weight.shape[0], padding_idx
        return weight.index_select(0, ids.reshape(-1)).view(*ids.shape, weight.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (ids,) = ctx.saved_tensors
        flat = grad.reshape(-1, grad.shape[-1])
        out = flat.new_zeros(ctx.rows, flat.shape[1]).index_add_(0, ids.reshape(-1), flat)
        if ctx.padding_idx is not None:
            out[ctx.padding_idx] = 0  # as nn.Embedding: the padding row gets no gradient
        return out, None, None


def rows(table: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
    """``table(ids)``; dense tables through :class:`_Rows` (sparse ones keep their sparse grads)."""
    if table.sparse:
        return table(ids)
    return _Rows.apply(table.weight, ids, table.padding_idx)


def source_weights(
    logits: torch.Tensor | None, present: torch.Tensor, drop_item: torch.Tensor | None = None
) -> torch.Tensor:
    """The weights of each position's sources (its own vector, fields 1..n): the softmax of its
    attention row over the sources present.

    Args:
        logits: (N, n + 1) rows of A (EGES), or None for equal weights (GES).
        present: (N, n) which fields have a value.
        drop_item: (N,) bool: leave out the item's own vector where a field is present.

    Returns:
        (N, n + 1), rows summing to 1.
    """
    own = torch.ones_like(present[:, :1])  # (N, 1)
    if drop_item is not None:
        own = ~(drop_item & present.any(1)).unsqueeze(1)
    mask = torch.cat([own, present], 1)  # (N, n+1)
    if logits is None:
        logits = torch.zeros(mask.shape, device=present.device)
    return torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=1)  # (N, n+1)


class EGES(nn.Module):
    """Item, side-info and context embeddings with per-item attention over the sources.

    Args:
        num_items: items, indexed 1..num_items (0 = padding).
        vocab_sizes: values per side-info field (indices 1..size; 0 = padding).
        side_offsets, side_values: per field, the CSR side information of every item
            (see :mod:`eges.training.items`); registered as buffers, not trained.
        embedding_dim: d (paper: 160).
        mode: ``eges``, ``ges`` or ``bge``.
        sparse: sparse gradients for the embedding tables (``train.optimizer: sparse_adam``,
            :class:`eges.training.optim.RowAdam`).
    """

    def __init__(
        self,
        num_items: int,
        vocab_sizes: list[int],
        side_offsets: list[torch.Tensor],
        side_values: list[torch.Tensor],
        embedding_dim: int = 128,
        mode: Mode = "eges",
        sparse: bool = False,
    ) -> None:
        super().__init__()
        if len(vocab_sizes) != len(side_offsets) or len(side_offsets) != len(side_values):
            raise ValueError("one vocabulary size, offsets and values tensor per field")
        self.num_items = num_items
        self.mode = mode
        self.num_fields = len(vocab_sizes) if mode != "bge" else 0
        d = embedding_dim
        self.item = nn.Embedding(num_items + 1, d, padding_idx=0, sparse=sparse)  # W⁰
        self.side = nn.ModuleList(
            nn.EmbeddingBag(size + 1, d, mode="mean", sparse=sparse, padding_idx=0)
            for size in vocab_sizes[: self.num_fields]
        )  # W¹..Wⁿ
        # A: only EGES has it (an unused parameter would stall DDP in GES/BGE mode)
        self.attention = (
            nn.Embedding(num_items + 1, self.num_fields + 1, sparse=sparse)
            if mode == "eges" and self.num_fields
            else None
        )
        self.context = nn.Embedding(num_items + 1, d, padding_idx=0, sparse=sparse)  # Z
        for i, (off, val) in enumerate(zip(side_offsets, side_values)):
            self.register_buffer(f"side_offsets_{i}", off.long(), persistent=False)
            self.register_buffer(f"side_values_{i}", val.long(), persistent=False)
        # which side-info values some trained item carries (see mark_trained_values); a value
        # only cold items have keeps its random initial embedding and must not embed them
        for i, size in enumerate(vocab_sizes[: self.num_fields]):
            self.register_buffer(f"side_trained_{i}", torch.ones(size + 1, dtype=torch.bool))
        # each field's weight in a new item's vector (cold start): equal, the paper's mean,
        # unless train.cold_weights sets them (set_cold_weights); kept in the export's model.pt
        # metadata, not in the state dict, so checkpoints stay as they were
        self.register_buffer("cold_weights", torch.ones(self.num_fields), persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def mark_trained_values(self, walk_counts: torch.Tensor) -> None:
        """Record which side-info values are carried by items that occur in the walks.

        Only those values' embeddings receive gradients; cold-start embedding ignores the others
        (they would add their random initial vectors).

        Args:
            walk_counts: (V + 1,) occurrences of each item in the walks.
        """
        warm = torch.nonzero(torch.as_tensor(walk_counts)[1:] > 0).squeeze(1) + 1  # (W,)
        for i in range(self.num_fields):
            trained = getattr(self, f"side_trained_{i}")
            trained.zero_()
            flat, _ = gather_bags(
                warm.to(trained.device),
                getattr(self, f"side_offsets_{i}"),
                getattr(self, f"side_values_{i}"),
            )
            trained[flat] = True

    @torch.no_grad()
    def set_cold_weights(
        self,
        weights: dict[str, float] | None,
        fields: list[str],
        source: str = "train.cold_weights",
    ) -> None:
        """Set :attr:`cold_weights` from ``{field name: weight}`` (a field left out weighs 1;
        None: all 1, the plain mean).

        Args:
            weights: field name -> weight, or None.
            fields: the walk output's side-info fields (BGE uses none of them: no weights).
            source: where the weights come from, for the error message.

        Raises:
            ValueError: a name that is not one of ``fields``, or a weight <= 0.
        """
        fields = list(fields)
        weights = weights or {}
        unknown = sorted(set(weights) - set(fields))
        if unknown:
            raise ValueError(
                f"{source} names {', '.join(unknown)}, not side-info field(s) of this "
                f"walk output ({', '.join(fields) or 'none'})"
            )
        if any(not w > 0 for w in weights.values()):
            raise ValueError(f"{source} must be > 0")
        self.cold_weights.copy_(
            torch.tensor([float(weights.get(f, 1.0)) for f in fields[: self.num_fields]])
        )

    def reset_parameters(self) -> None:
        bound = 0.5 / self.item.embedding_dim  # word2vec's initialisation
        nn.init.uniform_(self.item.weight, -bound, bound)
        for bag in self.side:
            nn.init.uniform_(bag.weight, -bound, bound)
        if self.attention is not None:
            nn.init.zeros_(self.attention.weight)  # equal weights at the start
        nn.init.zeros_(self.context.weight)  # as word2vec's output layer
        with torch.no_grad():
            self.item.weight[0].zero_()
            for bag in self.side:
                bag.weight[0].zero_()

    def _bags(
        self, ids: torch.Tensor, trained_only: bool = False
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per field, the values of ``ids`` as (flat (M,), bag offsets (N,), bag lengths (N,)).

        ``trained_only`` leaves out values no trained item carries (for cold start).
        """
        bags = []
        for i in range(self.num_fields):
            offsets = getattr(self, f"side_offsets_{i}")
            flat, bag_offsets = gather_bags(ids, offsets, getattr(self, f"side_values_{i}"))
            lengths = offsets[ids + 1] - offsets[ids]  # (N,)
            bags.append(
                self._trained_values(i, flat, lengths)
                if trained_only
                else (flat, bag_offsets, lengths)
            )
        return bags

    def _trained_values(
        self, field: int, flat: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One field's bags less the values no trained item carries (:meth:`mark_trained_values`).

        Args:
            field: the field's index.
            flat: (M,) the values of all bags, bag after bag.
            lengths: (N,) values per bag.

        Returns:
            (flat (M',), bag offsets (N,), bag lengths (N,)) of the values kept.
        """
        keep = getattr(self, f"side_trained_{field}")[flat]  # (M,)
        bag_of = torch.repeat_interleave(
            torch.arange(len(lengths), device=lengths.device), lengths
        )  # (M,)
        flat = flat[keep]
        lengths = torch.bincount(bag_of[keep], minlength=len(lengths))  # (N,)
        return flat, torch.cumsum(lengths, 0) - lengths, lengths

    @staticmethod
    def _present(bags: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Which fields have a value: (N, n) bool."""
        return torch.stack([lengths > 0 for _, _, lengths in bags], 1)

    def source_weights(self, ids: torch.Tensor) -> torch.Tensor:
        """Weights of (item, field 1..n) for each id, rows summing to 1. Shape (N, n + 1)."""
        if self.num_fields == 0:
            return torch.ones(ids.shape[0], 1, device=ids.device)
        return self._weights(ids, self._present(self._bags(ids)))

    def _weights(
        self, ids: torch.Tensor, present: torch.Tensor, drop_item: torch.Tensor | None = None
    ) -> torch.Tensor:
        logits = rows(self.attention, ids) if self.attention is not None else None
        return source_weights(logits, present, drop_item)

    def forward(self, ids: torch.Tensor, drop_item: torch.Tensor | None = None) -> torch.Tensor:
        """H for warm items: (N,) item indices -> (N, D).

        Each field's weighted mean is one ``embedding_bag`` sum with per-value weights
        a_v^j / (values of the field), so no (N, n + 1, D) stack of sources is formed.
        ``drop_item`` (N,) bool leaves W⁰ out of those rows that have side information: H is
        then their side information alone, as for a new item (``train.item_dropout``).
        """
        own = rows(self.item, ids)  # (N, D)
        if self.num_fields == 0:
            return own
        bags = self._bags(ids)
        weights = self._weights(ids, self._present(bags), drop_item)  # (N, n+1)
        h = own * weights[:, :1]
        for i, (flat, bag_offsets, lengths) in enumerate(bags):
            per_value = torch.repeat_interleave(
                weights[:, i + 1] / lengths.clamp(min=1), lengths, output_size=flat.numel()
            )  # (M,)
            bag = self.side[i]
            h = h + F.embedding_bag(
                flat,
                bag.weight,
                bag_offsets,
                mode="sum",
                sparse=bag.sparse,
                per_sample_weights=per_value,
                padding_idx=0,
            )  # (N, D)
        return h

    def cold_start(self, side_ids: list[list[torch.Tensor]]) -> torch.Tensor:
        """Vectors of new items from side information alone (paper §3.3.2).

        Args:
            side_ids: per item, per field, a 1-D tensor of vocabulary indices (may be empty);
                fields past the model's are ignored, missing ones count as empty.

        Returns:
            (N, D): the mean over fields with at least one value of each field's mean value
            embedding, weighted by :attr:`cold_weights` (equal unless set); a zero vector for
            an item without any known value. Values that no
            trained item carries (:meth:`mark_trained_values`) are ignored. Index 0, if given
            and marked trained, counts as a value (its row of zeros enters the field's mean).
        """
        if self.num_fields == 0:
            raise ValueError("BGE has no side-information embeddings: cannot embed new items")
        device = self.item.weight.device
        bags = []
        for i in range(self.num_fields):
            per_item = [
                fields[i].to(device)
                if i < len(fields)
                else torch.zeros(0, dtype=torch.long, device=device)
                for fields in side_ids
            ]
            flat = (
                torch.cat(per_item) if per_item else torch.zeros(0, dtype=torch.long, device=device)
            )  # (M,)
            lengths = torch.tensor(
                [v.numel() for v in per_item], dtype=torch.long, device=device
            )  # (N,)
            bags.append(self._trained_values(i, flat, lengths))
        return self._side_mean(bags, padding_idx=None)

    def cold_start_items(self, ids: torch.Tensor) -> torch.Tensor:
        """Cold-start vectors of catalogue items from their stored side info. (N,) -> (N, D).

        As :meth:`cold_start` with the items' own values, except that index 0 (padding) is
        left out of a field's mean (the stored values start at 1).
        """
        if self.num_fields == 0:
            raise ValueError("BGE has no side-information embeddings: cannot embed new items")
        return self._side_mean(self._bags(ids, trained_only=True), padding_idx=0)

    def _side_mean(
        self, bags: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], padding_idx: int | None
    ) -> torch.Tensor:
        """The cold-start vectors of N bags per field: the mean over the fields with a value of
        each field's mean value embedding, weighted by :attr:`cold_weights`; zero where no field
        has a value.

        Args:
            bags: per field, (flat (M,), bag offsets (N,), bag lengths (N,)), untrained values
                already left out (:meth:`_trained_values`).
            padding_idx: a value left out of the field means (it still makes the field count
                as present), or None to average every value given.

        Returns:
            (N, D).
        """
        side = torch.stack(
            [  # (N, n, D) field means; empty bags are zero
                F.embedding_bag(
                    flat,
                    bag.weight,
                    bag_offsets,
                    mode="mean",
                    sparse=bag.sparse,
                    padding_idx=padding_idx,
                )
                for bag, (flat, bag_offsets, _) in zip(self.side, bags)
            ],
            1,
        )
        weight = self._present(bags) * self.cold_weights  # (N, n)
        total = weight.sum(1, keepdim=True)  # (N, 1)
        total = torch.where(total > 0, total, torch.ones_like(total))
        return (side * weight.unsqueeze(-1)).sum(1) / total  # (N, D)
