"""Drop-in embedding layers. Each subclasses its ``torch.nn`` twin (same constructor, parameters and
``state_dict``) and only changes ``forward`` to call the hand-written Functions."""

from __future__ import annotations

from torch import Tensor, nn

from manual_backprop.functional.embedding import embedding, embedding_bag
from manual_backprop.nn._base import names_the_layer, register


@register(nn.Embedding)
class Embedding(nn.Embedding):
    """a_n = W[i_n]; ∂C/∂W[r] = Σ_{n : i_n = r} δ_n (see :class:`manual_backprop.functional.embedding.Embedding`)."""

    @names_the_layer
    def forward(self, input: Tensor) -> Tensor:
        return embedding(input, self.weight, self.padding_idx, self.max_norm, self.norm_type,
                         self.scale_grad_by_freq, self.sparse)


@register(nn.EmbeddingBag)
class EmbeddingBag(nn.EmbeddingBag):
    """Sums, means or maxes of bags of rows (see :class:`manual_backprop.functional.embedding.EmbeddingBag`)."""

    @names_the_layer
    def forward(self, input: Tensor, offsets: Tensor | None = None, per_sample_weights: Tensor | None = None) -> Tensor:
        return embedding_bag(input, self.weight, offsets, self.max_norm, self.norm_type, self.scale_grad_by_freq,
                             self.mode, self.sparse, per_sample_weights, self.include_last_offset, self.padding_idx)
