"""Rows for packed sequences (manual_backprop.functional.packing): torch._pack_padded_sequence and
torch._pad_packed_sequence, time-major and batch_first, with and without feature dimensions, a grid longer
than the longest sequence, total_length and padding_value, and the round trip pad(pack(x)).

Each row's output is the data (or padded) tensor only; batch_sizes and lengths carry no gradient and are
compared in tests/test_packing.py. The lengths are constants of the row, so vmap batches only the values."""

import torch

from manual_backprop.functional.packing import _pack_padded_sequence, _pad_packed_sequence

from cases import DT, Case, leaf


def _pack(lengths, batch_first, impl=_pack_padded_sequence):
    return lambda x: impl(x, torch.tensor(lengths), batch_first)[0]


def _pad(batch_sizes, batch_first, padding_value=0.0, total_length=0, impl=_pad_packed_sequence):
    return lambda data: impl(data, torch.tensor(batch_sizes), batch_first, padding_value, total_length)[0]


def _padded(lengths, steps, batch_first, *features):
    grid = (len(lengths), steps) if batch_first else (steps, len(lengths))
    return lambda: (leaf(torch.randn(*grid, *features, dtype=DT)),)


def _packed(batch_sizes, *features):
    return lambda: (leaf(torch.randn(sum(batch_sizes), *features, dtype=DT)),)


def _round_trip(lengths, batch_first, total_length, pack, pad):
    def round_trip(x):
        data, batch_sizes = pack(x, torch.tensor(lengths), batch_first)
        return pad(data, batch_sizes, batch_first, -1.0, total_length)[0]
    return round_trip


PACK = [  # (tag, lengths, time steps of the grid, batch_first, feature dims)
    ("time-major", (4, 3, 3, 1), 4, False, (2,)),
    ("batch-first", (4, 3, 3, 1), 4, True, (2,)),
    ("no-features", (3, 2, 1), 3, False, ()),
    ("no-features-batch-first", (3, 2, 1), 3, True, ()),
    ("grid-longer-than-lengths", (3, 3, 1), 5, True, (2, 3)),
    ("one-sequence", (3,), 3, False, (2,)),
    ("equal-lengths", (2, 2, 2), 2, True, (3,)),
]
PAD = [  # (tag, batch_sizes, batch_first, padding_value, total_length, feature dims)
    ("time-major", (4, 3, 3, 1), False, 0.0, 0, (2,)),
    ("batch-first", (4, 3, 3, 1), True, 0.0, 0, (2,)),
    ("padding-value", (3, 2, 1), True, -2.5, 0, (2,)),
    ("total-length", (3, 2, 1), False, 0.0, 5, (2, 3)),
    ("total-length-batch-first", (3, 2, 1), True, 1.0, 4, ()),
    ("trailing-zero-batch", (3, 2, 0), False, 0.0, 0, (2,)),
]

FUNCTION_CASES = [
    *[Case(f"packing-pack-{tag}", _pack(lengths, bf), _pack(lengths, bf, torch._pack_padded_sequence),
           _padded(lengths, steps, bf, *features))
      for tag, lengths, steps, bf, features in PACK],
    *[Case(f"packing-pad-{tag}", _pad(sizes, bf, value, total),
           _pad(sizes, bf, value, total, impl=torch._pad_packed_sequence), _packed(sizes, *features))
      for tag, sizes, bf, value, total, features in PAD],
    *[Case(f"packing-round-trip-{'batch-first' if bf else 'time-major'}",
           _round_trip((4, 2, 1), bf, 5, _pack_padded_sequence, _pad_packed_sequence),
           _round_trip((4, 2, 1), bf, 5, torch._pack_padded_sequence, torch._pad_packed_sequence),
           _padded((4, 2, 1), 4, bf, 2))
      for bf in (False, True)],
]

MODULE_CASES = []
