"""The audit itself: it must fail where a native gradient runs, and say where."""

import pytest
import torch

import manual_backprop as mbp

from cases import DT, FUNCTION_CASES, call, native_model


def test_audit_catches_native_backward():
    """The negative control: the same model unconverted fails the audit, by name."""
    native = native_model("sigmoid")
    loss = torch.nn.CrossEntropyLoss()(native(torch.randn(4, 5, dtype=DT)), torch.tensor([0, 1, 2, 0]))
    audit = mbp.audit_backward(loss)
    assert not audit.ok
    assert "SigmoidBackward0 (native)" in audit.native_nodes
    assert "aten.sigmoid_backward.default" in audit.backward_kernels
    assert "verdict: native gradient nodes" in str(audit)


def test_audit_catches_a_native_op_between_manual_layers():
    model = mbp.convert(native_model("tanh"))
    out = model(torch.randn(4, 5, dtype=DT))
    audit = mbp.audit_backward(mbp.functional.mse_loss(torch.exp(out), torch.zeros_like(out)))
    assert audit.native_nodes == ["ExpBackward0 (native)"]


def test_audit_report_reads_well_for_a_manual_model():
    model = mbp.convert(native_model("relu"))
    with mbp.layer_by_layer():  # each layer its own node (a Sequential fuses Linear + ReLU otherwise)
        out = model(torch.randn(4, 5, dtype=DT))
    audit = mbp.audit_backward(mbp.functional.mse_loss(out, torch.zeros_like(out)))
    assert audit.ok
    report = str(audit)
    assert "2 × Linear" in report and "2 × ReLU" in report and "1 × MSELoss" in report
    assert "AccumulateGrad (no calculus)" in report
    assert "aten.mm.default" in report
    assert "verdict: every derivative came from manual_backprop's hand-written backward" in report


def test_audit_refuses_a_loss_without_graph():
    with pytest.raises(ValueError, match="no backward graph"):
        mbp.audit_backward(torch.tensor(1.0))


AUDITED_CASES = [c for c in FUNCTION_CASES if "inplace" not in c.id]  # their copy `x * 1` is native by design;
# in-place activations are audited inside models in test_nn.py


@pytest.mark.parametrize("case", AUDITED_CASES, ids=[c.id for c in AUDITED_CASES])
def test_every_function_in_the_table_passes_the_audit(case):
    out = call(case.manual, case.args(), case.kwargs)
    audit = mbp.audit_backward(out, gradient=torch.randn_like(out))
    assert audit.ok, str(audit)
