"""Embeddings: a lookup a_n = W[i_n] of table rows, and bags that sum, average or max such rows.

A lookup is a matrix product with a one-hot row, a_n = onehot(i_n) · W, so the chain rule sends
each δ_n back to the one row it read: ∂C/∂W[r] = Σ_{n : i_n = r} δ_n. The indices are integers
and get no gradient.

Index letters: n every index position (all dimensions of the input, flattened), r a row of the
table (0 ≤ r < V, V = num_embeddings), d an embedding coordinate, b a bag, j a member of a bag
(a position of the flat input of ``embedding_bag``), bag(j) the bag member j belongs to.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from manual_backprop.errors import LayerInputError, shape
from manual_backprop.functional._function import ManualFunction, may_write_in_place
from manual_backprop.functional.losses import _can_inspect_values

_INDEX_DTYPES = (torch.int64, torch.int32)
_BAG_MODES = {"sum": 0, "mean": 1, "max": 2}


def _row_gradient(i: Tensor, rows: Tensor, keep: Tensor | None, num_weights: int,
                  scale_grad_by_freq: bool, sparse: bool) -> Tensor:
    """∂C/∂W from one gradient row per looked-up index i_n: row r collects Σ_{n : i_n = r} rows_n."""
    if scale_grad_by_freq:
        count = rows.new_zeros(num_weights).index_add(0, i, torch.ones_like(i, dtype=rows.dtype))  # count(r)
        rows = rows / count.index_select(0, i).unsqueeze(1)  # ÷ count(i_n): frequent rows take smaller steps
    if keep is not None:
        rows = torch.where(keep.unsqueeze(1), rows, 0)  # the padding row learns nothing
    if sparse:  # the same sum, left unsummed: a sparse (uncoalesced) tensor with one row per lookup
        kept = slice(None) if keep is None else keep
        return torch.sparse_coo_tensor(i[kept].unsqueeze(0), rows[kept], (num_weights, rows.shape[1]),
                                       check_invariants=False)  # indices were checked in the forward
    table = rows.new_zeros(num_weights, rows.shape[1])
    if may_write_in_place(rows):  # into the fresh zeros: index_add would copy the whole table first
        return table.index_add_(0, i, rows)  # ∂C/∂W[r] = Σ_{n : i_n = r} rows_n
    return table.index_add(0, i, rows)  # (the same, out of place: a second derivative, or a vmap over rows)


class Embedding(ManualFunction):
    """a_n = W[i_n]: row i_n of the table W (V, d) for every index position n.

    ∂C/∂W[r] = Σ_{n : i_n = r} δ_n          each row collects the δ of every position that read it
               ÷ count(r)                  with scale_grad_by_freq (count(r) = #{n : i_n = r})
               = 0 for r = padding_idx     the padding row stays fixed
    Forward mode (jvp):  ȧ_n = Ẇ[i_n].
    The last two lines of ∂C/∂W are conventions (torch's), not the derivative of the forward; the
    forward mode, like torch's, gives the true derivative. With sparse=True, ∂C/∂W is a sparse
    tensor holding one row δ_n per lookup (torch's layout).
    """

    @staticmethod
    def forward(indices: Tensor, weight: Tensor, padding_idx: int | None, scale_grad_by_freq: bool,
                sparse: bool) -> Tensor:
        rows = weight.index_select(0, indices.reshape(-1))  # W[i_n] for every position n
        return rows.reshape(*indices.shape, weight.shape[1])

    @staticmethod
    def setup_context(ctx, inputs, output):
        indices, weight, ctx.padding_idx, ctx.scale_grad_by_freq, ctx.sparse = inputs
        ctx.num_weights = weight.shape[0]
        ctx.save_for_backward(indices)
        ctx.save_for_forward(indices)

    @staticmethod
    def backward(ctx, delta: Tensor):
        (indices,) = ctx.saved_tensors
        grad_weight = None
        if ctx.needs_input_grad[1]:
            i = indices.reshape(-1)
            delta_n = delta.reshape(i.shape[0], delta.shape[-1])  # δ_n, one row per index position
            keep = None if ctx.padding_idx is None else i != ctx.padding_idx
            grad_weight = _row_gradient(i, delta_n, keep, ctx.num_weights, ctx.scale_grad_by_freq,
                                        ctx.sparse)  # ∂C/∂W[r] = Σ_{n : i_n = r} δ_n
        return None, grad_weight, None, None, None

    @staticmethod
    def jvp(ctx, tangent_indices, tangent_weight, *_):
        (indices,) = ctx.saved_tensors
        tangent_rows = tangent_weight.index_select(0, indices.reshape(-1))  # ȧ_n = Ẇ[i_n]
        return tangent_rows.reshape(*indices.shape, tangent_weight.shape[1])


def _bags(i: Tensor, offsets: Tensor, include_last_offset: bool, keep: Tensor | None,
          dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """bag(j) for every member j (torch's offset2bag) and |b|, the number of non-padding members of bag b."""
    starts = (offsets[:-1] if include_last_offset else offsets).long()
    marks = torch.zeros(i.shape[0] + 1, dtype=torch.long, device=i.device)
    marks = marks.index_add(0, starts, torch.ones_like(starts))  # +1 where each bag starts
    bag = marks.cumsum(0)[: i.shape[0]] - 1  # bag(j) = (number of bag starts ≤ j) − 1
    counted = torch.ones_like(i, dtype=dtype) if keep is None else keep.to(dtype)
    size = torch.zeros(starts.shape[0], dtype=dtype, device=i.device).index_add(0, bag, counted)  # |b|
    return bag, size


class EmbeddingBag(ManualFunction):
    """a_b = ⊕_{j ∈ b} w_j W[i_j], with ⊕ a sum, a mean or an elementwise max over the members j of bag b.

    sum:   a_b = Σ_j w_j W[i_j]   (w_j = per_sample_weights, else 1)
           ∂C/∂W[r] = Σ_{j : i_j = r} w_j δ_bag(j)       ∂C/∂w_j = δ_bag(j) · W[i_j]
    mean:  a_b = Σ_j W[i_j] / |b|
           ∂C/∂W[r] = Σ_{j : i_j = r} δ_bag(j) / |bag(j)|
    max:   a_b,d = max_j W[i_j, d]
           ∂C/∂W[r, d] = Σ_b δ_b,d [r = the member row that won the max of bag b in coordinate d]
    Members equal to padding_idx are left out (of |b| too) and get no gradient; an empty bag is 0.
    With scale_grad_by_freq each ∂C/∂W[r] is divided by count(r), the number of members i_j = r.
    Forward mode: sum/mean are linear in W and in w, so ȧ = bag(Ẇ; w) + bag(W; ẇ); max picks Ẇ at the winners.
    """

    @staticmethod
    def forward(indices: Tensor, weight: Tensor, offsets: Tensor, per_sample_weights: Tensor | None, mode: str,
                include_last_offset: bool, padding_idx: int | None, scale_grad_by_freq: bool, sparse: bool):
        w = None if per_sample_weights is None else per_sample_weights.reshape(-1)
        out, _, _, winners = torch.embedding_bag(weight, indices.reshape(-1), offsets, False, _BAG_MODES[mode],
                                                 False, w, include_last_offset, padding_idx)
        return out, winners  # winners (bags, d): the row of the max in each coordinate (mode 'max')

    @staticmethod
    def setup_context(ctx, inputs, output):
        (indices, weight, offsets, per_sample_weights, ctx.mode, ctx.include_last_offset, ctx.padding_idx,
         ctx.scale_grad_by_freq, ctx.sparse) = inputs
        out, winners = output
        ctx.mark_non_differentiable(winners)
        ctx.out_shape = out.shape
        ctx.num_weights = weight.shape[0]
        ctx.psw_shape = None if per_sample_weights is None else per_sample_weights.shape
        needs_weight = ctx.needs_input_grad[3]  # ∂C/∂w_j reads W[i_j]
        ctx.save_for_backward(indices, offsets, per_sample_weights, weight if needs_weight else None, winners)
        ctx.save_for_forward(indices, offsets, per_sample_weights, weight, winners)

    @staticmethod
    def backward(ctx, delta: Tensor, _):
        indices, offsets, per_sample_weights, weight, winners = ctx.saved_tensors
        i = indices.reshape(-1).long()
        keep = None if ctx.padding_idx is None else i != ctx.padding_idx  # members that count
        grad_weight = grad_psw = None
        if delta.shape[0] == 0:  # no bag at all: nothing depended on W or w
            grad_weight = delta.new_zeros(ctx.num_weights, delta.shape[1]) if ctx.needs_input_grad[1] else None
            grad_psw = delta.new_zeros(ctx.psw_shape) if ctx.needs_input_grad[3] else None
            return None, grad_weight, None, grad_psw, None, None, None, None, None
        bag, size = _bags(i, offsets, ctx.include_last_offset, keep, delta.dtype)
        if ctx.needs_input_grad[1] and ctx.mode == "max":
            delta_won = torch.where((size > 0).unsqueeze(1), delta, 0)  # an empty bag has no winner
            winners = winners.long().clamp(min=0)  # (an empty bag's is −1 on CUDA, 0 on CPU)
            grad_weight = delta.new_zeros(ctx.num_weights, delta.shape[1]).scatter_add(
                0, winners, delta_won)  # ∂C/∂W[r, d] = Σ_b δ_b,d [r won coordinate d of bag b]
        elif ctx.needs_input_grad[1]:
            delta_j = delta.index_select(0, bag)  # δ_bag(j): each member receives its bag's δ
            if per_sample_weights is not None:
                delta_j = delta_j * per_sample_weights.reshape(-1, 1)  # ∂a_b/∂W[i_j] = w_j
            if ctx.mode == "mean":
                delta_j = delta_j / size.clamp(min=1).index_select(0, bag).unsqueeze(1)  # ∂a_b/∂W[i_j] = 1/|b|
            grad_weight = _row_gradient(i, delta_j, keep, ctx.num_weights, ctx.scale_grad_by_freq,
                                        ctx.sparse)  # ∂C/∂W[r] = Σ_{j : i_j = r} ∂a_b/∂W[i_j] · δ_bag(j)
        if ctx.needs_input_grad[3]:
            acc = torch.promote_types(delta.dtype, torch.float32)  # half precision: sum in float32, round once
            delta_j, w_j = delta.index_select(0, bag).to(acc), weight.index_select(0, i).to(acc)
            grad_psw = (delta_j * w_j).sum(1).to(delta.dtype)  # ∂C/∂w_j = δ_bag(j) · W[i_j]
            if keep is not None:
                grad_psw = torch.where(keep, grad_psw, 0)  # a padding member was never added in
            grad_psw = grad_psw.reshape(ctx.psw_shape)
        return None, grad_weight, None, grad_psw, None, None, None, None, None

    @staticmethod
    def jvp(ctx, tangent_indices, tangent_weight, tangent_offsets, tangent_psw, *_):
        indices, offsets, per_sample_weights, weight, winners = ctx.saved_tensors
        i = indices.reshape(-1)
        tangent_a = weight.new_zeros(ctx.out_shape)
        if ctx.mode == "max":
            if tangent_weight is not None:
                keep = None if ctx.padding_idx is None else i != ctx.padding_idx
                _, size = _bags(i.long(), offsets, ctx.include_last_offset, keep, weight.dtype)
                won = tangent_weight.gather(0, winners.long().clamp(min=0))  # ȧ_b,d = Ẇ[winner, d]
                tangent_a = torch.where((size > 0).unsqueeze(1), won, 0)  # an empty bag stays 0
            return tangent_a, None

        def bag_of(table: Tensor, w: Tensor | None) -> Tensor:  # the same bags, of another table or weights
            w = None if w is None else w.reshape(-1)
            return torch.embedding_bag(table, i, offsets, False, _BAG_MODES[ctx.mode], False, w,
                                       ctx.include_last_offset, ctx.padding_idx)[0]

        if tangent_weight is not None:
            tangent_a = tangent_a + bag_of(tangent_weight, per_sample_weights)  # ∂a/∂W · Ẇ (linear in W)
        if tangent_psw is not None:
            tangent_a = tangent_a + bag_of(weight, tangent_psw)  # ∂a/∂w · ẇ (linear in w)
        return tangent_a, None


def _check_indices(name: str, indices: Tensor, num_embeddings: int) -> None:
    if indices.dtype not in _INDEX_DTYPES:
        raise LayerInputError(f"{name}: indices must be an integer tensor (int64 or int32), got {indices.dtype}")
    if _can_inspect_values(indices) and indices.numel() > 0:
        bad = (indices < 0) | (indices >= num_embeddings)
        if bad.any():
            raise LayerInputError(
                f"{name}: indices {sorted(set(indices[bad].tolist()))[:10]} are outside [0, {num_embeddings}) "
                f"(num_embeddings={num_embeddings})"
            )


def _padding_row(name: str, padding_idx: int | None, num_embeddings: int) -> int | None:
    """padding_idx as a row number in [0, V) (a negative one counts from the end), or None."""
    if padding_idx is None:
        return None
    if not -num_embeddings <= padding_idx < num_embeddings:
        raise LayerInputError(f"{name}: padding_idx={padding_idx} must be within num_embeddings, "
                              f"-{num_embeddings} through {num_embeddings - 1}")
    return padding_idx % num_embeddings


def _renorm(input: Tensor, weight: Tensor, max_norm: float, norm_type: float) -> None:
    """Like torch: rows of W that are looked up and longer than max_norm are shrunk in place, no gradient."""
    torch.embedding_renorm_(weight.detach(), input, max_norm, norm_type)


def embedding(
    input: Tensor,
    weight: Tensor,
    padding_idx: int | None = None,
    max_norm: float | None = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
) -> Tensor:
    """Like ``torch.nn.functional.embedding``; backward ∂C/∂W[r] = Σ_{n : i_n = r} δ_n."""
    if weight.dim() != 2:
        raise LayerInputError(
            f"embedding: weight must be 2-D (num_embeddings, embedding_dim), got shape {shape(weight)}"
        )
    _check_indices("embedding", input, weight.shape[0])
    padding_row = _padding_row("embedding", padding_idx, weight.shape[0])
    if sparse and scale_grad_by_freq:
        raise LayerInputError("embedding: scale_grad_by_freq is not supported with sparse gradients (as in torch)")
    if max_norm is not None:
        input = input.contiguous()
        _renorm(input, weight, max_norm, norm_type)
    return Embedding.call(input, weight, padding_row, scale_grad_by_freq, sparse)


def _check_offsets(offsets: Tensor, n_indices: int, include_last_offset: bool) -> None:
    if offsets.dtype not in _INDEX_DTYPES:
        raise LayerInputError(f"embedding_bag: offsets must be an integer tensor (int64 or int32), got {offsets.dtype}")
    if include_last_offset and offsets.shape[0] < 1:
        raise LayerInputError("embedding_bag: include_last_offset needs at least one offset")
    if offsets.shape[0] == 0 and n_indices > 0:  # torch 2.13 crashes (segmentation fault) on this
        raise LayerInputError(f"embedding_bag: offsets is empty (no bag) but the input holds {n_indices} indices")
    if not _can_inspect_values(offsets) or offsets.numel() == 0:
        return
    if offsets[0] != 0:
        raise LayerInputError(
            f"embedding_bag: offsets[0] has to be 0 (the first bag starts at position 0), got {offsets[0].item()}"
        )
    if (offsets[1:] < offsets[:-1]).any():
        raise LayerInputError(f"embedding_bag: offsets must be non-decreasing, got {offsets.tolist()[:20]}")
    if offsets[-1] > n_indices:
        raise LayerInputError(
            f"embedding_bag: offsets[-1]={offsets[-1].item()} is greater than the input's length {n_indices}"
        )
    if include_last_offset and offsets[-1] != n_indices:
        raise LayerInputError(
            f"embedding_bag: with include_last_offset=True the last offset must equal the input's length "
            f"{n_indices} (CSR layout), got {offsets[-1].item()}"
        )


def embedding_bag(
    input: Tensor,
    weight: Tensor,
    offsets: Tensor | None = None,
    max_norm: float | None = None,
    norm_type: float = 2,
    scale_grad_by_freq: bool = False,
    mode: str = "mean",
    sparse: bool = False,
    per_sample_weights: Tensor | None = None,
    include_last_offset: bool = False,
    padding_idx: int | None = None,
) -> Tensor:
    """Like ``torch.nn.functional.embedding_bag``; backward spreads δ_b to the members of bag b
    (times w_j for 'sum', ÷ |b| for 'mean', to the winning member for 'max')."""
    if weight.dtype == torch.long and input.is_floating_point():
        warnings.warn(
            "Argument order of nn.functional.embedding_bag was changed. "
            "Usage `embedding_bag(weight, input, ...)` is deprecated, "
            "and should now be `embedding_bag(input, weight, ...)`.",
            stacklevel=2,
        )
        weight, input = input, weight
    if per_sample_weights is not None and shape(per_sample_weights) != shape(input):
        raise LayerInputError(f"embedding_bag: per_sample_weights shape {shape(per_sample_weights)} "
                              f"differs from the input shape {shape(input)}")
    if weight.dim() != 2:
        raise LayerInputError(
            f"embedding_bag: weight must be 2-D (num_embeddings, embedding_dim), got shape {shape(weight)}"
        )
    if input.dim() == 2:
        if offsets is not None:
            raise LayerInputError("embedding_bag: if input is 2-D (bags of equal length), offsets has to be None, "
                                  f"got offsets of shape {shape(offsets)}")
        if input.shape[1] == 0:
            raise LayerInputError(f"embedding_bag: a 2-D input needs bags of length ≥ 1, got shape {shape(input)}")
        offsets = torch.arange(0, input.numel(), input.shape[1], dtype=input.dtype, device=input.device)
        include_last_offset = False
    elif input.dim() == 1:
        if offsets is None or offsets.dim() != 1:
            got = "None" if offsets is None else f"shape {shape(offsets)}"
            raise LayerInputError(f"embedding_bag: a 1-D input needs 1-D offsets (where each bag starts), got {got}")
    else:
        raise LayerInputError(f"embedding_bag: input has to be 1-D or 2-D, got shape {shape(input)}")
    if mode not in _BAG_MODES:
        raise LayerInputError(f"embedding_bag: mode has to be one of sum, mean or max, got {mode!r}")
    if mode == "max" and scale_grad_by_freq:
        raise LayerInputError("embedding_bag: max mode does not support scaling the gradient by the frequency")
    if mode == "max" and sparse:
        raise LayerInputError("embedding_bag: max mode does not support sparse weights")
    if sparse and scale_grad_by_freq:
        raise LayerInputError("embedding_bag: scale_grad_by_freq is not supported with sparse gradients (as in torch)")
    if per_sample_weights is not None:
        if mode != "sum":
            raise LayerInputError(
                f"embedding_bag: per_sample_weights is only supported for mode='sum', got mode={mode!r}"
            )
        if per_sample_weights.dtype != weight.dtype:
            raise LayerInputError(f"embedding_bag: per_sample_weights dtype {per_sample_weights.dtype} differs from "
                                  f"the weight's {weight.dtype}")
    if not weight.is_floating_point():
        raise LayerInputError(f"embedding_bag: weight must be floating point, got {weight.dtype}")
    _check_indices("embedding_bag", input, weight.shape[0])
    _check_offsets(offsets, input.numel(), include_last_offset)
    padding_row = _padding_row("embedding_bag", padding_idx, weight.shape[0])
    if max_norm is not None:
        _renorm(input, weight, max_norm, norm_type)
    out, _ = EmbeddingBag.call(input, weight, offsets, per_sample_weights, mode, include_last_offset, padding_row,
                               scale_grad_by_freq, sparse)
    return out
