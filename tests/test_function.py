"""What ManualFunction gives every Function: forward mode, autocast, torch.compile."""

import copy

import pytest
import torch

import manual_backprop as mbp
from manual_backprop.functional._function import ManualFunction
from manual_backprop.functional.linear import Linear

from cases import DT, native_model


def test_forward_mode_through_a_converted_model_matches_native():
    native = native_model("tanh")
    manual = mbp.convert(copy.deepcopy(native))
    x, tangent = torch.randn(3, 5, dtype=DT), torch.randn(3, 5, dtype=DT)
    out_m, jvp_m = torch.func.jvp(manual, (x,), (tangent,))
    out_n, jvp_n = torch.func.jvp(native, (x,), (tangent,))
    torch.testing.assert_close(out_m, out_n, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(jvp_m, jvp_n, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.func.jacfwd(manual)(x[0]), torch.func.jacrev(native)(x[0]))


def test_hessian_vector_product_through_a_converted_model():
    native = native_model("sigmoid")
    manual = mbp.convert(copy.deepcopy(native))
    x = torch.randn(4, 5, dtype=DT)

    def loss_of(model):
        return lambda inp: mbp.functional.mse_loss(model(inp), torch.zeros(4, 3, dtype=DT))

    v = torch.randn(4, 5, dtype=DT)
    hvp_m = torch.autograd.functional.hvp(loss_of(manual), x, v)[1]
    hvp_n = torch.autograd.functional.hvp(loss_of(native), x, v)[1]
    torch.testing.assert_close(hvp_m, hvp_n, rtol=1e-10, atol=1e-12)


def test_a_jvp_lives_on_a_twin_so_that_compile_sees_a_function_without_one():
    assert Linear.jvp is torch.autograd.Function.jvp  # what dynamo checks
    assert issubclass(Linear.with_jvp, Linear) and Linear.with_jvp.jvp is not torch.autograd.Function.jvp
    assert issubclass(Linear.with_jvp, ManualFunction)


@pytest.mark.parametrize("activation", ["sigmoid", "relu", "log_softmax"])
def test_bf16_autocast_step_matches_native_within_bf16_tolerance(activation):
    native = native_model(activation).float()
    manual = mbp.convert(copy.deepcopy(native))
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    grads = []
    for model, ce in [(native, torch.nn.functional.cross_entropy), (manual, mbp.functional.cross_entropy)]:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
            loss = ce(out.float(), y)
        assert out.dtype == torch.bfloat16
        loss.backward()
        grads.append([p.grad for p in model.parameters()])
        assert all(p.grad.dtype == torch.float32 for p in model.parameters())
    for g_m, g_n in zip(*grads):
        torch.testing.assert_close(g_m, g_n, rtol=2e-2, atol=2e-2)


def test_autocast_backward_passes_the_audit():
    model = mbp.convert(native_model("relu").float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(4, 5))
    audit = mbp.audit_backward(out, gradient=torch.ones_like(out))
    assert audit.ok, str(audit)


@pytest.mark.slow
def test_compiled_converted_model_has_the_same_gradients_without_graph_breaks():
    native = native_model("tanh").float()
    manual = mbp.convert(copy.deepcopy(native))
    compiled = torch.compile(manual, fullgraph=True)  # fullgraph: a graph break would raise
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    mbp.functional.cross_entropy(compiled(x), y).backward()
    torch.nn.functional.cross_entropy(native(x), y).backward()
    for p_m, p_n in zip(manual.parameters(), native.parameters()):
        torch.testing.assert_close(p_m.grad, p_n.grad)


def _all_functions(cls=ManualFunction):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_functions(sub)


def test_every_twin_shares_the_wrapped_backward_of_its_function():
    import manual_backprop.functional  # noqa: F401  (every family registered)

    functions = [f for f in _all_functions() if not f.__dict__.get("_twin") and "backward" in f.__dict__]
    assert len(functions) > 30
    for function in functions:
        assert function.with_jvp.backward is function.backward, function
        assert function.with_jvp.setup_context is function.setup_context, function


LOSSES_UNDER_AUTOCAST = [
    ("cross_entropy", lambda z: (z, torch.randint(0, 5, (8,)))),
    ("mse_loss", lambda z: (z, torch.randn(8, 5))),
    ("l1_loss", lambda z: (z, torch.randn(8, 5))),
    ("binary_cross_entropy_with_logits", lambda z: (z, torch.rand(8, 5))),
    ("kl_div", lambda z: (z, torch.rand(8, 5))),
]


@pytest.mark.parametrize(("name", "make"), LOSSES_UNDER_AUTOCAST, ids=[n for n, _ in LOSSES_UNDER_AUTOCAST])
def test_losses_run_in_float32_under_autocast_like_torch(name, make):
    logits = torch.randn(8, 5).bfloat16().requires_grad_()
    logits_native = logits.detach().clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(0)
        loss = getattr(mbp.functional, name)(*make(logits))
        torch.manual_seed(0)
        expected = getattr(torch.nn.functional, name)(*make(logits_native))
    assert loss.dtype == expected.dtype == torch.float32
    torch.testing.assert_close(loss, expected)
    audit = mbp.audit_backward(loss)
    assert audit.ok, str(audit)
    expected.backward()
    assert logits.grad.dtype == torch.bfloat16
    torch.testing.assert_close(logits.grad, logits_native.grad)


def test_bf16_autocast_step_of_a_cnn_matches_native_within_bf16_tolerance():
    torch.manual_seed(0)
    native = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(inplace=True),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 5),
    )
    manual = mbp.convert(copy.deepcopy(native), strict=True)
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 5, (6,))
    for model, ce in [(native, torch.nn.functional.cross_entropy), (manual, mbp.functional.cross_entropy)]:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = ce(model(x), y)
        loss.backward()
    for (name, p_m), (_, p_n) in zip(manual.named_parameters(), native.named_parameters()):
        torch.testing.assert_close(p_m.grad, p_n.grad, rtol=3e-2, atol=3e-2, msg=name)
    for b_m, b_n in zip(manual.buffers(), native.buffers()):
        torch.testing.assert_close(b_m, b_n, rtol=1e-2, atol=1e-2)
