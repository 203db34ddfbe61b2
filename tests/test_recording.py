"""record_error_terms: δ = ∂C/∂(layer output), exactly what autograd says it is."""

import copy

import pytest
import torch
from torch import nn

import manual_backprop as mbp

from cases import DT


def _net():
    return nn.Sequential(nn.Linear(5, 4), nn.Sigmoid(), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).to(DT)


def test_error_terms_equal_autograd_at_every_layer_output():
    native = _net()
    manual = mbp.convert(copy.deepcopy(native))
    x, y = torch.randn(7, 5, dtype=DT), torch.randint(0, 2, (7,))

    outputs = {}
    for path, module in native.named_children():
        module.register_forward_hook(lambda m, a, out, path=path: outputs.__setitem__(path, out))
    loss = nn.functional.cross_entropy(native(x), y)
    paths = list(outputs)
    expected = dict(zip(paths, torch.autograd.grad(loss, [outputs[p] for p in paths])))

    with mbp.record_error_terms(manual) as rec:
        mbp.functional.cross_entropy(manual(x), y).backward()
    assert sorted(rec) == sorted(paths)
    for path in paths:
        torch.testing.assert_close(rec[path], expected[path], rtol=1e-12, atol=1e-14, msg=path)


def test_recording_leaves_gradients_and_audit_unchanged():
    model = mbp.convert(_net())
    twin = copy.deepcopy(model)
    x, y = torch.randn(3, 5, dtype=DT), torch.randint(0, 2, (3,))
    with mbp.record_error_terms(model):
        audit = mbp.audit_backward(mbp.functional.cross_entropy(model(x), y))
    assert audit.ok, str(audit)
    mbp.functional.cross_entropy(twin(x), y).backward()
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0)


def test_nothing_is_captured_outside_the_context():
    model = mbp.convert(_net())
    rec = mbp.record_error_terms(model)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    with rec:
        assert all(model[i]._forward_hooks for i in range(5))
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    with rec:
        model(torch.randn(2, 5, dtype=DT)).sum().backward()
    out = model(torch.randn(6, 5, dtype=DT))
    assert type(out.grad_fn).__name__ == "LinearBackward"  # no probe after the context
    out.sum().backward()
    assert rec["0"].shape == (2, 4)  # the backward outside the context changed nothing


def test_values_stay_readable_after_the_context_and_follow_the_last_forward():
    model = mbp.convert(_net())
    with mbp.record_error_terms(model, layers=["0"]) as rec:
        with pytest.raises(KeyError, match=r"run the forward and loss\.backward"):
            rec["0"]
        model(torch.randn(2, 5, dtype=DT)).sum().backward()
        model(torch.randn(6, 5, dtype=DT)).sum().backward()
    assert list(rec) == ["0"]
    assert rec["0"].shape == (6, 4)


def test_a_layer_used_twice_has_two_error_terms():
    layer = nn.Linear(3, 3).to(DT)
    model = mbp.convert(nn.Sequential(layer, nn.Tanh(), layer))
    with mbp.record_error_terms(model) as rec:
        model(torch.randn(2, 3, dtype=DT)).sum().backward()
    assert len(rec.all("0")) == 2
    with pytest.raises(KeyError, match="ran 2 times"):
        rec["0"]


def test_no_grad_forward_records_nothing():
    model = mbp.convert(_net())
    with mbp.record_error_terms(model) as rec, torch.no_grad():
        model(torch.randn(2, 5, dtype=DT))
    assert len(rec) == 0


def test_unconverted_model_is_refused():
    with pytest.raises(ValueError, match=r"call manual_backprop.convert\(model\) first"):
        mbp.record_error_terms(_net())


def test_unknown_layer_path_lists_the_valid_ones():
    with pytest.raises(KeyError, match=r"no manual layer at \['fc9'\]; layers are \['0', '1', '2', '3', '4'\]"):
        mbp.record_error_terms(mbp.convert(_net()), layers=["fc9"])


def test_non_module_is_refused():
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        mbp.record_error_terms("model")


def test_a_recording_cannot_be_entered_twice():
    rec = mbp.record_error_terms(mbp.convert(_net()))
    with rec, pytest.raises(RuntimeError, match="already open"):
        rec.__enter__()


def test_one_layer_may_be_named_by_a_plain_string():
    model = mbp.convert(_net())
    with mbp.record_error_terms(model, layers="2") as rec:
        model(torch.randn(3, 5, dtype=DT)).sum().backward()
    assert list(rec) == ["2"]


def test_a_model_with_only_a_loss_is_told_why():
    with pytest.raises(ValueError, match="other than losses"):
        mbp.record_error_terms(mbp.convert(nn.MSELoss()))


def test_two_backwards_through_one_forward_add_up_like_grad():
    model = mbp.convert(_net())
    with mbp.record_error_terms(model, layers=["4"]) as rec:
        out = model(torch.randn(3, 5, dtype=DT))
        out.sum().backward(retain_graph=True)
        once = rec["4"].clone()
        out.sum().backward()
    torch.testing.assert_close(rec["4"], 2 * once)


@pytest.mark.slow
def test_recording_works_on_a_compiled_model():
    model = mbp.convert(_net())
    reference = copy.deepcopy(model)
    x, y = torch.randn(4, 5, dtype=DT), torch.randint(0, 2, (4,))
    with mbp.record_error_terms(reference) as expected:
        mbp.functional.cross_entropy(reference(x), y).backward()
    compiled = torch.compile(model)
    with mbp.record_error_terms(model) as rec:
        mbp.functional.cross_entropy(compiled(x), y).backward()
    assert sorted(rec) == sorted(expected)
    for path in expected:
        torch.testing.assert_close(rec[path], expected[path])
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad)
