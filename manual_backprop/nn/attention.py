"""Drop-in multi-head attention. Subclasses its ``torch.nn`` twin (same constructor, parameters and
``state_dict``) and only changes ``forward`` to call the hand-written Functions."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear as _NativeOutProj

from manual_backprop.functional.attention import _multi_head_attention
from manual_backprop.functional.linear import linear
from manual_backprop.nn._base import names_the_layer, register


@register(nn.MultiheadAttention)
class MultiheadAttention(nn.MultiheadAttention):
    """q, k, v = in-projections; per head softmax(Q·Kᵀ/√d + M)·V; out-projection
    (see :class:`manual_backprop.functional.attention.AttentionHeads`).

    Never takes torch's inference fast path: the result is the same, computed by the Functions.
    """

    @names_the_layer
    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        return _multi_head_attention(
            query, key, value, self.embed_dim, self.num_heads, self.in_proj_weight, self.in_proj_bias,
            self.bias_k, self.bias_v, self.add_zero_attn, self.dropout, self.out_proj.weight, self.out_proj.bias,
            self.training, key_padding_mask, need_weights, attn_mask,
            not self._qkv_same_embed_dim, self.q_proj_weight, self.k_proj_weight, self.v_proj_weight, None, None,
            average_attn_weights, is_causal, batch_first=self.batch_first,
        )


@register(_NativeOutProj)
class NonDynamicallyQuantizableLinear(_NativeOutProj):
    """MultiheadAttention's ``out_proj``: an nn.Linear under another name (the attention uses its
    weight and bias directly); called on its own it is z = a_prev · Wᵀ + b, as :class:`Linear`."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return linear(input, self.weight, self.bias)
