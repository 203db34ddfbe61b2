"""Rows for the losses beyond MSE and cross-entropy: every loss of torch.nn, every reduction.

Inputs keep away from the kinks (|a − y| = 0, a hinge exactly at its margin) so that finite
differences never straddle one.
"""

import torch
import torch.nn.functional as F

import manual_backprop.functional.losses as ML
import manual_backprop.nn.losses  # noqa: F401  (registers the modules)

from cases import DT, Case, ModuleCase, away_from_zero, leaf

REDUCTIONS = ("mean", "sum", "none")
SHAPE = (4, 3)


def _randn(*shape):
    return torch.randn(*shape, dtype=DT)


def _regression(shape=SHAPE, weighted=False):
    """a, y = a + an offset with |offset| ≥ 0.1 (away from the kink of |a − y|), and maybe a weight."""
    def make():
        a = _randn(*shape)
        y = a + away_from_zero(*shape)
        w = (leaf(torch.rand(*shape, dtype=DT) + 0.5),) if weighted else ()
        return leaf(a), leaf(y), *w
    return make


def _weighted(fn):
    """The weight as the third positional argument (torch takes it by keyword for these losses)."""
    return lambda a, y, w, **kw: fn(a, y, weight=w, **kw)


def _probabilities(*shape):
    return torch.rand(*shape, dtype=DT) * 0.8 + 0.1


def _bce(weight_shape=None):
    return lambda: (leaf(_probabilities(*SHAPE)), leaf(torch.rand(*SHAPE, dtype=DT)),
                    None if weight_shape is None else torch.rand(*weight_shape, dtype=DT) + 0.5)


def _bce_logits_weights(fn):
    return lambda x, y, w, pw, **kw: fn(x, y, w, pos_weight=pw, **kw)


def _nll(shape, weight=False, ignore_index=None):
    def make():
        c_dim = 1 if len(shape) >= 2 else 0
        z = leaf(torch.log_softmax(_randn(*shape), c_dim))
        t = torch.randint(0, shape[c_dim], shape[:c_dim] + shape[c_dim + 1:])
        if ignore_index is not None:
            t.view(-1)[0] = ignore_index
        w = torch.rand(shape[c_dim], dtype=DT) + 0.5 if weight else None
        return z, t, w
    return make


def _kl(shape=SHAPE):
    return lambda: (leaf(torch.log_softmax(_randn(*shape), -1)), leaf(torch.softmax(_randn(*shape), -1)))


def _kl_log_target(shape=SHAPE):
    return lambda: (leaf(torch.log_softmax(_randn(*shape), -1)), leaf(torch.log_softmax(_randn(*shape), -1)))


def _counts(*shape):
    """Targets in [0.1, 0.9] or [1.5, 3.5]: away from 1, where the Stirling term switches on."""
    u = torch.rand(*shape, dtype=DT)
    return torch.where(torch.rand(*shape, dtype=DT) < 0.5, 0.1 + 0.8 * u, 1.5 + 2 * u)


def _poisson(log_input=True):
    return lambda: (leaf(_randn(*SHAPE) if log_input else torch.rand(*SHAPE, dtype=DT) + 0.5), leaf(_counts(*SHAPE)))


def _gaussian(var_shape=SHAPE, float_var=None):
    def make():
        var = float_var if float_var is not None else leaf(torch.rand(*var_shape, dtype=DT) + 0.5)
        return leaf(_randn(*SHAPE)), leaf(_randn(*SHAPE)), var
    return make


def _signs(*shape):
    return torch.where(torch.rand(shape) < 0.5, -1.0, 1.0).to(DT)


def _soft_margin():
    return lambda: (leaf(_randn(*SHAPE)), _signs(*SHAPE))


def _multilabel(shape=SHAPE, weight=False):
    return lambda: (leaf(_randn(*shape)), leaf(torch.rand(*shape, dtype=DT)),
                    leaf(torch.rand(shape[-1], dtype=DT) + 0.5) if weight else None)


def _margin_ranking(margin, shape=(5,)):
    """x1, x2 and y = ±1 with −y (x1 − x2) + margin at least 0.1 away from the hinge at 0."""
    def make():
        y = _signs(*shape)
        x2 = _randn(*shape)
        x1 = x2 + y * (margin - away_from_zero(*shape))  # −y (x1 − x2) + margin = ±|offset|
        return leaf(x1), leaf(x2), leaf(y)
    return make


def _hinge(margin, shape=SHAPE, odd_targets=False):
    def make():
        y = _signs(*shape)
        if odd_targets:
            y.view(-1)[:2] = torch.tensor([0.5, 0.0], dtype=DT)  # neither ±1: torch adds both terms
        return leaf(margin + away_from_zero(*shape)), y
    return make


def _cosine(margin, batch=(5,), dim=3):
    """Pairs whose cosine stays at least ~0.05 away from the margin, the kink for y = −1."""
    def make():
        x1, x2 = _randn(*batch, dim), _randn(*batch, dim)
        cos = F.cosine_similarity(x1, x2, dim=-1)
        x2 = torch.where((cos - margin).abs().unsqueeze(-1) < 0.05, -x2, x2)  # flip the ones too near
        return leaf(x1), leaf(x2), _signs(*batch)
    return make


def _multi_margin(shape=(5, 4), margin=1.0, weight=False):
    """Scores whose margins z = margin − x_y + x_c stay ≥ 0.05 away from the hinge at 0."""
    def make():
        n_classes = shape[-1]
        t = torch.randint(0, n_classes, shape[:-1])
        x = _randn(*shape) * 0.7
        rows = x.reshape(-1, n_classes)
        x_y = rows.gather(1, t.reshape(-1, 1))
        z = margin - x_y + rows
        rows = rows + torch.where(z.abs() < 0.05, 0.1, 0.0)  # nudge the few near the hinge
        w = (torch.rand(n_classes, dtype=DT) + 0.5,) if weight else ()
        return leaf(rows.reshape(shape)), t, *w
    return make


def _multi_margin_weighted(fn):
    return lambda x, t, w, **kw: fn(x, t, weight=w, **kw)


def _triplet(shape=(5, 3)):
    return lambda: (leaf(_randn(*shape)), leaf(_randn(*shape)), leaf(_randn(*shape)))


FUNCTION_CASES = [
    *[Case(f"losses-l1-{r}", ML.l1_loss, F.l1_loss, _regression(), {"reduction": r}) for r in REDUCTIONS],
    *[Case(f"losses-l1-weighted-{r}", _weighted(ML.l1_loss), _weighted(F.l1_loss), _regression(weighted=True),
           {"reduction": r}) for r in REDUCTIONS],
    *[Case(f"losses-smooth_l1-{r}", ML.smooth_l1_loss, F.smooth_l1_loss, _regression(), {"reduction": r, "beta": 0.5})
      for r in REDUCTIONS],
    Case("losses-smooth_l1-beta0", ML.smooth_l1_loss, F.smooth_l1_loss, _regression(), {"beta": 0.0}),
    *[Case(f"losses-huber-{r}", ML.huber_loss, F.huber_loss, _regression(), {"reduction": r, "delta": 0.7})
      for r in REDUCTIONS],
    *[Case(f"losses-huber-weighted-{r}", _weighted(ML.huber_loss), _weighted(F.huber_loss),
           _regression(weighted=True), {"reduction": r}) for r in ("mean", "none")],
    *[Case(f"losses-bce-{r}", ML.binary_cross_entropy, F.binary_cross_entropy, _bce(), {"reduction": r})
      for r in REDUCTIONS],
    Case("losses-bce-weight-broadcast", ML.binary_cross_entropy, F.binary_cross_entropy, _bce((3,))),
    *[Case(f"losses-bce_logits-{r}", ML.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits,
           lambda: (leaf(_randn(*SHAPE) * 3), leaf(torch.rand(*SHAPE, dtype=DT))), {"reduction": r})
      for r in REDUCTIONS],
    *[Case(f"losses-bce_logits-weights-{r}", _bce_logits_weights(ML.binary_cross_entropy_with_logits),
           _bce_logits_weights(F.binary_cross_entropy_with_logits),
           lambda: (leaf(_randn(*SHAPE) * 3), leaf(torch.rand(*SHAPE, dtype=DT)),
                    torch.rand(*SHAPE, dtype=DT) + 0.5, torch.rand(3, dtype=DT) * 3), {"reduction": r})
      for r in ("mean", "none")],
    *[Case(f"losses-nll-{r}", ML.nll_loss, F.nll_loss, _nll((5, 4)), {"reduction": r}) for r in REDUCTIONS],
    *[Case(f"losses-nll-weight-ignore-{r}", ML.nll_loss, F.nll_loss, _nll((6, 4), weight=True, ignore_index=2),
           {"reduction": r, "ignore_index": 2}) for r in REDUCTIONS],
    Case("losses-nll-unbatched", ML.nll_loss, F.nll_loss, _nll((4,))),
    *[Case(f"losses-nll-spatial-plain-{r}", ML.nll_loss, F.nll_loss, _nll((2, 3, 2, 2)), {"reduction": r})
      for r in REDUCTIONS],
    Case("losses-nll-spatial", ML.nll_loss, F.nll_loss, _nll((2, 3, 2, 2), weight=True, ignore_index=-100)),
    *[Case(f"losses-kl-{r}", ML.kl_div, F.kl_div, _kl(), {"reduction": r}) for r in ("batchmean", "sum", "none")],
    Case("losses-kl-log_target-batchmean", ML.kl_div, F.kl_div, _kl_log_target(),
         {"reduction": "batchmean", "log_target": True}),
    *[Case(f"losses-poisson-{r}", ML.poisson_nll_loss, F.poisson_nll_loss, _poisson(), {"reduction": r})
      for r in REDUCTIONS],
    Case("losses-poisson-rate-full", ML.poisson_nll_loss, F.poisson_nll_loss, _poisson(log_input=False),
         {"log_input": False, "full": True, "eps": 1e-3}),
    Case("losses-poisson-log-full-sum", ML.poisson_nll_loss, F.poisson_nll_loss, _poisson(),
         {"full": True, "reduction": "sum"}),
    *[Case(f"losses-gaussian-{r}", ML.gaussian_nll_loss, F.gaussian_nll_loss, _gaussian(), {"reduction": r})
      for r in REDUCTIONS],
    Case("losses-gaussian-var-per-sample-full", ML.gaussian_nll_loss, F.gaussian_nll_loss, _gaussian((4,)),
         {"full": True}),
    Case("losses-gaussian-var-size1-none", ML.gaussian_nll_loss, F.gaussian_nll_loss, _gaussian((1, 3)),
         {"reduction": "none"}),
    Case("losses-gaussian-float-var", ML.gaussian_nll_loss, F.gaussian_nll_loss, _gaussian(float_var=0.7)),
    *[Case(f"losses-soft_margin-{r}", ML.soft_margin_loss, F.soft_margin_loss, _soft_margin(), {"reduction": r})
      for r in REDUCTIONS],
    *[Case(f"losses-multilabel_soft_margin-{r}", ML.multilabel_soft_margin_loss, F.multilabel_soft_margin_loss,
           _multilabel(weight=True), {"reduction": r}) for r in REDUCTIONS],
    Case("losses-multilabel_soft_margin-unweighted-3d", ML.multilabel_soft_margin_loss,
         F.multilabel_soft_margin_loss, _multilabel((2, 2, 3))),
    *[Case(f"losses-margin_ranking-{r}", ML.margin_ranking_loss, F.margin_ranking_loss, _margin_ranking(0.3),
           {"reduction": r, "margin": 0.3}) for r in REDUCTIONS],
    *[Case(f"losses-hinge_embedding-{r}", ML.hinge_embedding_loss, F.hinge_embedding_loss, _hinge(1.0),
           {"reduction": r}) for r in REDUCTIONS],
    Case("losses-hinge_embedding-odd-targets", ML.hinge_embedding_loss, F.hinge_embedding_loss,
         _hinge(0.5, odd_targets=True), {"margin": 0.5, "reduction": "none"}),
    *[Case(f"losses-cosine_embedding-{r}", ML.cosine_embedding_loss, F.cosine_embedding_loss, _cosine(0.2),
           {"reduction": r, "margin": 0.2}) for r in REDUCTIONS],
    Case("losses-cosine_embedding-unbatched", ML.cosine_embedding_loss, F.cosine_embedding_loss,
         _cosine(-0.5, batch=())),
    *[Case(f"losses-multi_margin-{r}", ML.multi_margin_loss, F.multi_margin_loss, _multi_margin(), {"reduction": r})
      for r in REDUCTIONS],
    *[Case(f"losses-multi_margin-p2-weighted-{r}", _multi_margin_weighted(ML.multi_margin_loss),
           _multi_margin_weighted(F.multi_margin_loss), _multi_margin(margin=0.5, weight=True),
           {"reduction": r, "p": 2, "margin": 0.5}) for r in ("mean", "none")],
    Case("losses-multi_margin-unbatched", ML.multi_margin_loss, F.multi_margin_loss, _multi_margin((4,))),
    *[Case(f"losses-triplet-{r}", ML.triplet_margin_loss, F.triplet_margin_loss, _triplet(), {"reduction": r})
      for r in REDUCTIONS],
    Case("losses-triplet-p1-swap", ML.triplet_margin_loss, F.triplet_margin_loss, _triplet(),
         {"p": 1, "swap": True, "margin": 2.0}),
    Case("losses-triplet-p3-none", ML.triplet_margin_loss, F.triplet_margin_loss, _triplet(),
         {"p": 3, "reduction": "none", "margin": 1.5}),
    Case("losses-triplet-unbatched-swap", ML.triplet_margin_loss, F.triplet_margin_loss, _triplet((4,)),
         {"swap": True, "margin": 3.0}),
]


def _module_regression():
    a = _randn(*SHAPE)
    return leaf(a), leaf(a + away_from_zero(*SHAPE))


MODULE_CASES = [
    ModuleCase("losses-L1Loss", torch.nn.L1Loss, _module_regression),
    ModuleCase("losses-SmoothL1Loss", lambda: torch.nn.SmoothL1Loss(beta=0.5, reduction="sum"), _module_regression),
    ModuleCase("losses-HuberLoss", lambda: torch.nn.HuberLoss(delta=0.5), _module_regression),
    ModuleCase("losses-BCELoss", lambda: torch.nn.BCELoss(torch.rand(3, dtype=DT) + 0.5),
               lambda: _bce()()[:2]),
    ModuleCase("losses-BCEWithLogitsLoss",
               lambda: torch.nn.BCEWithLogitsLoss(torch.rand(*SHAPE, dtype=DT) + 0.5,
                                                  pos_weight=torch.rand(3, dtype=DT) * 3),
               lambda: (leaf(_randn(*SHAPE) * 3), leaf(torch.rand(*SHAPE, dtype=DT)))),
    ModuleCase("losses-NLLLoss", lambda: torch.nn.NLLLoss(torch.rand(4, dtype=DT) + 0.5, ignore_index=1),
               lambda: _nll((6, 4), ignore_index=1)()[:2]),
    ModuleCase("losses-KLDivLoss", lambda: torch.nn.KLDivLoss(reduction="batchmean", log_target=True),
               _kl_log_target()),
    ModuleCase("losses-PoissonNLLLoss", lambda: torch.nn.PoissonNLLLoss(log_input=False, full=True),
               _poisson(log_input=False)),
    ModuleCase("losses-GaussianNLLLoss", lambda: torch.nn.GaussianNLLLoss(full=True, eps=1e-3), _gaussian((4, 1))),
    ModuleCase("losses-SoftMarginLoss", torch.nn.SoftMarginLoss, _soft_margin()),
    ModuleCase("losses-MultiLabelSoftMarginLoss",
               lambda: torch.nn.MultiLabelSoftMarginLoss(torch.rand(3, dtype=DT) + 0.5, reduction="none"),
               lambda: _multilabel()()[:2]),
    ModuleCase("losses-MarginRankingLoss", lambda: torch.nn.MarginRankingLoss(margin=0.3), _margin_ranking(0.3)),
    ModuleCase("losses-HingeEmbeddingLoss", lambda: torch.nn.HingeEmbeddingLoss(margin=1.0), _hinge(1.0)),
    ModuleCase("losses-CosineEmbeddingLoss", lambda: torch.nn.CosineEmbeddingLoss(margin=0.2), _cosine(0.2)),
    ModuleCase("losses-MultiMarginLoss",
               lambda: torch.nn.MultiMarginLoss(p=2, margin=0.5, weight=torch.rand(4, dtype=DT) + 0.5),
               lambda: _multi_margin(margin=0.5)()[:2]),
    ModuleCase("losses-TripletMarginLoss", lambda: torch.nn.TripletMarginLoss(margin=1.5, p=2, swap=True),
               _triplet()),
]
