"""manual_backprop: PyTorch layers whose backward pass is the chain rule, written out by hand.

    model = manual_backprop.convert(model)          # swap in the hand-written layers
    with manual_backprop.record_error_terms(model) as rec:
        loss_fn(model(x), y).backward()
    rec["fc1"]                                      # δ = ∂C/∂z of layer fc1
"""

from manual_backprop import functional, nn
from manual_backprop.audit import BackwardAudit, audit_backward
from manual_backprop.convert import convert, is_manual, restore
from manual_backprop.coverage import CoverageReport, coverage
from manual_backprop.delta_rule import DeltaRuleStep, delta_rule_step
from manual_backprop.errors import (
    LayerInputError,
    NonFiniteError,
    UnsupportedModuleError,
    UnsupportedOperationError,
)
from manual_backprop.explain import WeightTrace, explain
from manual_backprop.graph import BackwardTree, backward_tree, model_backward_tree
from manual_backprop.nn import SUPPORTED_MODULES, layer_by_layer
from manual_backprop.recording import (
    ErrorTerms,
    PerSampleErrorTerms,
    per_sample_error_terms,
    record_error_terms,
)
from manual_backprop.routing import checkpoint_context
from manual_backprop.worked_example import (
    WORKED_EXAMPLES,
    WorkedExample,
    WorkedExampleError,
    WorkedStep,
    load_worked_example,
)

__version__ = "0.1.0"

__all__ = [
    "SUPPORTED_MODULES",
    "WORKED_EXAMPLES",
    "BackwardAudit",
    "BackwardTree",
    "CoverageReport",
    "DeltaRuleStep",
    "ErrorTerms",
    "LayerInputError",
    "NonFiniteError",
    "PerSampleErrorTerms",
    "UnsupportedModuleError",
    "UnsupportedOperationError",
    "WeightTrace",
    "WorkedExample",
    "WorkedExampleError",
    "WorkedStep",
    "__version__",
    "audit_backward",
    "backward_tree",
    "checkpoint_context",
    "convert",
    "coverage",
    "delta_rule_step",
    "explain",
    "functional",
    "is_manual",
    "layer_by_layer",
    "load_worked_example",
    "model_backward_tree",
    "nn",
    "per_sample_error_terms",
    "record_error_terms",
    "restore",
]
