"""Packed sequences beyond the case table: bit-identical values, batch_sizes, lengths, strides and
gradients for any lengths (hypothesis), the public pack_padded_sequence / pad_packed_sequence with
unsorted lengths routed to the hand-written functions, forward mode, non-float data, the audit of
first and second derivatives, and bad input refused where torch refuses it."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch.overrides import TorchFunctionMode

import manual_backprop as mbp
from manual_backprop import LayerInputError
from manual_backprop.audit import backward_graph
from manual_backprop.functional import ops
from manual_backprop.functional.packing import _pack_padded_sequence, _pad_packed_sequence

DT = torch.float64
lengths_st = st.lists(st.integers(1, 5), min_size=1, max_size=5).map(lambda ls: sorted(ls, reverse=True))


def _leaf(t):
    return t.detach().clone().requires_grad_(True)


def _assert_identical(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape and got.stride() == want.stride()
    assert torch.equal(got, want)


@settings(max_examples=60, deadline=None)
@given(lengths=lengths_st, extra_steps=st.integers(0, 2), batch_first=st.booleans(),
       features=st.lists(st.integers(1, 3), max_size=2))
def test_pack_is_bit_identical_to_torch(lengths, extra_steps, batch_first, features):
    steps = lengths[0] + extra_steps
    grid = (len(lengths), steps) if batch_first else (steps, len(lengths))
    x = torch.randn(*grid, *features, dtype=DT)
    x_m, x_n = _leaf(x), _leaf(x)
    data, batch_sizes = _pack_padded_sequence(x_m, torch.tensor(lengths), batch_first)
    want, want_sizes = torch._pack_padded_sequence(x_n, torch.tensor(lengths), batch_first)
    _assert_identical(data, want)
    _assert_identical(batch_sizes, want_sizes)
    delta = torch.randn_like(data)
    _assert_identical(torch.autograd.grad(data, x_m, delta)[0], torch.autograd.grad(want, x_n, delta)[0])


@settings(max_examples=60, deadline=None)
@given(lengths=lengths_st, batch_first=st.booleans(), features=st.lists(st.integers(1, 3), max_size=2),
       padding_value=st.sampled_from([0.0, -1.5, 7]), total_length=st.integers(-1, 8))
def test_pad_is_bit_identical_to_torch(lengths, batch_first, features, padding_value, total_length):
    batch_sizes = torch.tensor([sum(n > t for n in lengths) for t in range(lengths[0])])
    if 0 < total_length < lengths[0]:
        total_length = lengths[0]  # shorter is an error (tested below)
    data = torch.randn(sum(lengths), *features, dtype=DT)
    d_m, d_n = _leaf(data), _leaf(data)
    padded, out_lengths = _pad_packed_sequence(d_m, batch_sizes, batch_first, padding_value, total_length)
    want, want_lengths = torch._pad_packed_sequence(d_n, batch_sizes, batch_first, padding_value, total_length)
    _assert_identical(padded, want)  # with batch_first, the same transposed view torch returns
    _assert_identical(out_lengths, want_lengths)
    delta = torch.randn_like(padded)
    _assert_identical(torch.autograd.grad(padded, d_m, delta)[0], torch.autograd.grad(want, d_n, delta)[0])


_RULES = {torch._pack_padded_sequence: _pack_padded_sequence, torch._pad_packed_sequence: _pad_packed_sequence}


class _Routed(TorchFunctionMode):
    """The two C functions inside torch.nn.utils.rnn, sent to the hand-written ones (what routing.py will do)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return _RULES.get(func, func)(*args, **(kwargs or {}))


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("lengths", [[2, 5, 1, 3], torch.tensor([3, 3, 1, 2]), [4, 3, 2, 1]])
def test_public_functions_with_unsorted_lengths_match_torch(batch_first, lengths):
    enforce_sorted = lengths == [4, 3, 2, 1]
    x = torch.randn(*((4, 6) if batch_first else (6, 4)), 3, dtype=DT)
    x_m, x_n = _leaf(x), _leaf(x)

    def run(x):
        packed = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=enforce_sorted)
        return pad_packed_sequence(packed, batch_first=batch_first, padding_value=-1.0, total_length=7)

    with _Routed():
        padded, out_lengths = run(x_m)
    want, want_lengths = run(x_n)
    assert torch.equal(padded, want) and torch.equal(out_lengths, want_lengths)
    nodes = backward_graph(padded)
    assert nodes["PackPaddedSequence"] == nodes["PadPackedSequence"] == 1
    assert not any(n.startswith(("PackPaddedSequenceBackward", "CopySlices")) for n in nodes)
    delta = torch.randn_like(padded)
    assert torch.equal(torch.autograd.grad(padded, x_m, delta)[0], torch.autograd.grad(want, x_n, delta)[0])


@pytest.mark.parametrize("batch_first", [False, True])
def test_forward_mode_matches_torch(batch_first):
    """Both are linear, so the tangent out is the function of the tangent in (padding 0): compared with torch's
    forward, since torch.func.jvp runs neither of torch's own (no forward mode for _pack_padded_sequence, and
    _pad_packed_sequence reads batch_sizes' data pointer, which torch.func's wrapper has none of)."""
    lengths, batch_sizes = torch.tensor([3, 2, 2]), torch.tensor([3, 3, 1])
    x, dx = torch.randn(2, 3, 3, 2, dtype=DT).unbind()
    out, tangent_out = torch.func.jvp(lambda x: _pack_padded_sequence(x, lengths, batch_first)[0], (x,), (dx,))
    assert torch.equal(out, torch._pack_padded_sequence(x, lengths, batch_first)[0])
    assert torch.equal(tangent_out, torch._pack_padded_sequence(dx, lengths, batch_first)[0])

    data, ddata = torch.randn(2, 7, 2, dtype=DT).unbind()
    out, tangent_out = torch.func.jvp(lambda d: _pad_packed_sequence(d, batch_sizes, batch_first, 2.0, 4)[0],
                                      (data,), (ddata,))
    assert torch.equal(out, torch._pad_packed_sequence(data, batch_sizes, batch_first, 2.0, 4)[0])
    assert torch.equal(tangent_out, torch._pad_packed_sequence(ddata, batch_sizes, batch_first, 0.0, 4)[0])


@pytest.mark.parametrize("data", [torch.arange(7), torch.arange(7) % 2 == 0, torch.arange(7.0).half()])
@pytest.mark.parametrize("padding_value", [0.0, 5, 5.5])
def test_non_float_data_is_padded_like_torch(data, padding_value):
    batch_sizes = torch.tensor([3, 2, 1, 1])
    got, _ = _pad_packed_sequence(data, batch_sizes, True, padding_value, 0)
    _assert_identical(got, torch._pad_packed_sequence(data, batch_sizes, True, padding_value, 0)[0])
    padded = got.transpose(0, 1)
    packed, sizes = _pack_padded_sequence(padded, torch.tensor([4, 2, 1]), False)
    assert torch.equal(packed, data) and torch.equal(sizes, batch_sizes)


def test_audit_first_and_second_derivatives():
    """The backward of each is the other, so the gradient's own backward graph is hand-written too."""
    x = torch.randn(5, 3, 2, dtype=DT, requires_grad=True)
    data, batch_sizes = _pack_padded_sequence(x, torch.tensor([5, 3, 2]), False)
    padded, _ = _pad_packed_sequence(data, batch_sizes, False, -1.0, 6)
    delta = torch.randn(6, 3, 2, dtype=DT, requires_grad=True)
    (grad_x,) = torch.autograd.grad(padded, x, delta, create_graph=True)
    real = (torch.arange(5).unsqueeze(1) < torch.tensor([5, 3, 2])).unsqueeze(-1)  # the cells (t, b) with t < length_b
    assert torch.equal(grad_x.detach(), torch.where(real, delta.detach()[:5], 0))  # δ on real cells, 0 on padding
    second = mbp.audit_backward(grad_x, torch.randn_like(grad_x))  # the backward of the backward
    assert second.ok and second.graph["PackPaddedSequence"] == second.graph["PadPackedSequence"] == 1
    assert mbp.audit_backward(ops.sum(padded)).ok


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("batch_first", [False, True])
def test_on_cuda_like_torch(batch_first):
    x = torch.randn(*((3, 4) if batch_first else (4, 3)), 2, device="cuda", dtype=torch.float32)
    x_m, x_n = _leaf(x), _leaf(x)
    with _Routed():
        padded, _ = pad_packed_sequence(pack_padded_sequence(x_m, [2, 4, 3], batch_first, enforce_sorted=False),
                                        batch_first, total_length=5)
    want, _ = pad_packed_sequence(pack_padded_sequence(x_n, [2, 4, 3], batch_first, enforce_sorted=False),
                                  batch_first, total_length=5)
    assert padded.device.type == "cuda" and torch.equal(padded, want)
    delta = torch.randn_like(padded)
    assert torch.equal(torch.autograd.grad(padded, x_m, delta)[0], torch.autograd.grad(want, x_n, delta)[0])


_X = torch.randn(4, 3, 2)
_DATA, _SIZES = torch.randn(7, 2), torch.tensor([3, 2, 1, 1])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((_X, torch.tensor([[4, 2, 1]]), False), r"lengths must be a 1-D CPU int64 tensor.*2-D"),
        ((_X, torch.tensor(4), False), r"lengths must be a 1-D CPU int64 tensor.*0-D"),
        ((_X, torch.tensor([4, 2, 1], dtype=torch.int32), False), r"lengths must be .*torch.int32"),
        ((_X, torch.tensor([4.0, 2.0, 1.0]), False), r"lengths must be .*torch.float32"),
        ((_X, torch.tensor([4, 2, 1, 1]), False), r"got 4 lengths for a batch of 3 sequences"),
        ((_X, torch.tensor([3, 2, 1]), True), r"got 3 lengths for a batch of 4 sequences"),
        ((_X, torch.tensor([4, 2, 0]), False), r"every length must be greater than 0, got lengths \[4, 2, 0\]"),
        ((_X, torch.tensor([4, 2, -1]), False), r"greater than 0"),
        ((_X, torch.tensor([2, 4, 1]), False), r"lengths \[2, 4, 1\] must be sorted in decreasing order"),
        ((_X, torch.tensor([0, 2, 1]), False), r"must be sorted"),  # torch checks the last length first
        ((torch.randn(0, 3, 2), torch.tensor([1, 1, 1]), False), r"cannot pack an empty tensor"),
        ((torch.randn(4), torch.tensor([4]), False), r"input must be at least 2-D"),
    ],
)
def test_pack_refuses_what_torch_refuses(args, message):
    with pytest.raises(LayerInputError, match=message):
        _pack_padded_sequence(*args)
    with pytest.raises((RuntimeError, IndexError)):
        torch._pack_padded_sequence(*args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((_DATA, _SIZES.view(2, 2), False, 0.0, 0), r"batch_sizes must be a 1-D CPU int64 tensor"),
        ((_DATA, _SIZES.int(), False, 0.0, 0), r"batch_sizes must be .*torch.int32"),
        ((torch.randn(0, 2), torch.tensor([], dtype=torch.long), False, 0.0, 0), r"batch_sizes can not be empty"),
        ((_DATA, _SIZES, False, 0.0, 3), r"total_length=3 is less than the length of the longest sequence, 4"),
        ((torch.randn(6, 2), _SIZES, False, 0.0, 0), r"data has 6 rows .* add up to 7"),
        ((torch.randn(7, 2), torch.tensor([1, 2, 3, 1]), False, 0.0, 0), r"must be non-negative and non-increasing"),
        ((torch.randn(()), torch.tensor([1]), False, 0.0, 0), r"data must be at least 1-D"),
    ],
)
def test_pad_refuses_what_torch_refuses(args, message):
    with pytest.raises(LayerInputError, match=message):
        _pad_packed_sequence(*args)
    with pytest.raises(RuntimeError):
        torch._pad_packed_sequence(*args)


def test_inconsistent_input_torch_lets_through_is_refused():
    """Inputs torch takes without a word, all malformed: a length beyond the grid (torch returns data with
    fewer rows than its batch_sizes add up to), packed data with rows no batch size accounts for (torch
    drops them), and batch sizes that grow again after a 0 (torch writes its lengths out of bounds, so it is
    not called with those here). All are refused here rather than silently dropping or misplacing numbers."""
    data, batch_sizes = torch._pack_padded_sequence(_X, torch.tensor([6, 2, 1]), False)
    assert data.shape[0] != batch_sizes.sum()
    with pytest.raises(LayerInputError, match=r"the longest length 6 exceeds the 4 time steps"):
        _pack_padded_sequence(_X, torch.tensor([6, 2, 1]), False)
    torch._pad_packed_sequence(torch.randn(8, 2), _SIZES, False, 0.0, 0)
    with pytest.raises(LayerInputError, match=r"data has 8 rows"):
        _pad_packed_sequence(torch.randn(8, 2), _SIZES, False, 0.0, 0)
    with pytest.raises(LayerInputError, match=r"batch_sizes \[3, 0, 2\] must be non-negative and non-increasing"):
        _pad_packed_sequence(torch.randn(5, 2), torch.tensor([3, 0, 2]), False, 0.0, 0)
