"""Routing under torch.compile: a converted nn.TransformerEncoder with a causal mask compiles as one graph."""

from __future__ import annotations

import copy

import torch
from torch import nn

import manual_backprop as mbp


def test_a_converted_transformer_encoder_with_a_causal_mask_compiles_without_a_graph_break():
    """nn.TransformerEncoder checks a mask left without ``is_causal`` by ``bool((mask == causal).all())``, which
    breaks the graph; the routed encoder is told ``is_causal=False`` while compiling (the mask applied as given)."""
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    native = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    encoder = mbp.convert(nn.Sequential(copy.deepcopy(native)))[0]
    x = torch.randn(2, 5, 8)
    causal = nn.Transformer.generate_square_subsequent_mask(5)
    torch._dynamo.reset()
    counters.clear()
    out = torch.compile(lambda x: encoder(x, causal))(x)
    assert sum(counters["graph_break"].values()) == 0
    torch.testing.assert_close(out, native(x, causal))
