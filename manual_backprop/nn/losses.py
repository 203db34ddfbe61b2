"""Drop-in losses. Each subclasses its ``torch.nn`` twin (same constructor, parameters and
``state_dict``) and only changes ``forward`` to call the hand-written Functions."""

from __future__ import annotations

from torch import Tensor, nn

from manual_backprop.functional import losses as MF
from manual_backprop.nn._base import names_the_layer, register


@register(nn.MSELoss)
class MSELoss(nn.MSELoss):
    """C = mean (a − y)², ∂C/∂a = 2(a − y)/N."""

    @names_the_layer
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return MF.mse_loss(input, target, reduction=self.reduction)


@register(nn.CrossEntropyLoss)
class CrossEntropyLoss(nn.CrossEntropyLoss):
    """C = −mean log softmax(z)_y, ∂C/∂z = (softmax − onehot)/N."""

    @names_the_layer
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return MF.cross_entropy(
            input, target, weight=self.weight, ignore_index=self.ignore_index,
            reduction=self.reduction, label_smoothing=self.label_smoothing,
        )


@register(nn.L1Loss)
class L1Loss(nn.L1Loss):
    """C = mean |a − y|, ∂C/∂a = sign(a − y)/N."""

    @names_the_layer
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return MF.l1_loss(input, target, reduction=self.reduction)


@register(nn.SmoothL1Loss)
class SmoothL1Loss(nn.SmoothL1Loss):
    """C = mean smooth-L1(a − y), ∂C/∂a = clamp((a − y)/β, −1, 1)/N."""

    @names_the_layer
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return MF.smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


@register(nn.HuberLoss)
class HuberLoss(nn.HuberLoss):
    """C = mean Huber(a − y), ∂C/∂a = clamp(a − y, −δ, δ)/N."""

    @names_the_layer
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return MF.huber_loss(input, target, reduction=self.reduction, delta=self.delta)


@register(nn.BCELoss)
class BCELoss(nn.BCELoss):
    """C = −mean w [y log a + (1 − y) log(1 − a)], ∂C/∂a = w (a − y)/(a(1 − a) N)."""

    @names_the_layer
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return MF.binary_cross_entropy(input, target, weight=self.weight, reduction=self.reduction)


@register(nn.BCEWithLogitsLoss)
class BCEWithLogitsLoss(nn.BCEWithLogitsLoss):
    """C = mean w [(1 − y) x − (1 + (p_w − 1) y) log σ(x)], ∂C/∂x = w ((1 + (p_w − 1) y) σ(x) − p_w y)/N."""

    @names_the_layer
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return MF.binary_cross_entropy_with_logits(
            input, target, self.weight, pos_weight=self.pos_weight, reduction=self.reduction
        )


@register(nn.NLLLoss)
class NLLLoss(nn.NLLLoss):
    """C = −Σ w_y z_y / Σ w_y, ∂C/∂z = −w_y onehot(y) / Σ w_y."""

    @names_the_layer
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return MF.nll_loss(input, target, weight=self.weight, ignore_index=self.ignore_index, reduction=self.reduction)


@register(nn.KLDivLoss)
class KLDivLoss(nn.KLDivLoss):
    """C = Σ y (log y − x) / D, ∂C/∂x = −y/D."""

    @names_the_layer
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return MF.kl_div(input, target, reduction=self.reduction, log_target=self.log_target)


@register(nn.PoissonNLLLoss)
class PoissonNLLLoss(nn.PoissonNLLLoss):
    """C = mean (e^x − y x), ∂C/∂x = (e^x − y)/N (log_input=True)."""

    @names_the_layer
    def forward(self, log_input: Tensor, target: Tensor) -> Tensor:
        return MF.poisson_nll_loss(
            log_input, target, log_input=self.log_input, full=self.full, eps=self.eps, reduction=self.reduction
        )


@register(nn.GaussianNLLLoss)
class GaussianNLLLoss(nn.GaussianNLLLoss):
    """C = mean ½ (log v + (x − y)²/v), ∂C/∂x = (x − y)/(v N), ∂C/∂var = ½ (1/v − (x − y)²/v²)/N."""

    @names_the_layer
    def forward(self, input: Tensor, target: Tensor, var: Tensor | float) -> Tensor:
        return MF.gaussian_nll_loss(input, target, var, full=self.full, eps=self.eps, reduction=self.reduction)


@register(nn.SoftMarginLoss)
class SoftMarginLoss(nn.SoftMarginLoss):
    """C = mean log(1 + e^(−y x)), ∂C/∂x = −y σ(−y x)/N."""

    @names_the_layer
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return MF.soft_margin_loss(input, target, reduction=self.reduction)


@register(nn.MultiLabelSoftMarginLoss)
class MultiLabelSoftMarginLoss(nn.MultiLabelSoftMarginLoss):
    """C = mean_n Σ_c w_c BCE(σ(x_nc), y_nc)/K, ∂C/∂x = w (σ(x) − y)/(K N)."""

    @names_the_layer
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return MF.multilabel_soft_margin_loss(input, target, weight=self.weight, reduction=self.reduction)


@register(nn.MarginRankingLoss)
class MarginRankingLoss(nn.MarginRankingLoss):
    """C = mean max(0, −y (x1 − x2) + margin), ∂C/∂x1 = −y [active]/N = −∂C/∂x2."""

    @names_the_layer
    def forward(self, input1: Tensor, input2: Tensor, target: Tensor) -> Tensor:
        return MF.margin_ranking_loss(input1, input2, target, margin=self.margin, reduction=self.reduction)


@register(nn.HingeEmbeddingLoss)
class HingeEmbeddingLoss(nn.HingeEmbeddingLoss):
    """C = mean ([y = 1] x + [y = −1] max(0, margin − x)), ∂C/∂x = ([y ≠ −1] − [y ≠ 1][x ≤ margin])/N."""

    @names_the_layer
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return MF.hinge_embedding_loss(input, target, margin=self.margin, reduction=self.reduction)


@register(nn.CosineEmbeddingLoss)
class CosineEmbeddingLoss(nn.CosineEmbeddingLoss):
    """C = mean ([y = 1](1 − cos) + [y = −1] max(0, cos − margin)), ∂C/∂x1 = ∂l/∂cos · ∂cos/∂x1 / N."""

    @names_the_layer
    def forward(self, input1: Tensor, input2: Tensor, target: Tensor) -> Tensor:
        return MF.cosine_embedding_loss(input1, input2, target, margin=self.margin, reduction=self.reduction)


@register(nn.MultiMarginLoss)
class MultiMarginLoss(nn.MultiMarginLoss):
    """C = mean_n Σ_{c ≠ y} w_y max(0, margin − x_y + x_c)^p / K, ∂C/∂x_c = w_y p z_c^(p−1)/(K N)."""

    @names_the_layer
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return MF.multi_margin_loss(
            input, target, p=self.p, margin=self.margin, weight=self.weight, reduction=self.reduction
        )


@register(nn.TripletMarginLoss)
class TripletMarginLoss(nn.TripletMarginLoss):
    """C = mean max(0, margin + d(a, p) − d(a, n)), ∂C/∂a = h (∂d(a, p)/∂a − ∂d(a, n)/∂a)/N."""

    @names_the_layer
    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
        return MF.triplet_margin_loss(
            anchor, positive, negative, margin=self.margin, p=self.p, eps=self.eps, swap=self.swap,
            reduction=self.reduction,
        )
