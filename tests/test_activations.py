"""Activations beyond the table: extreme inputs, randomness, bad input, signatures."""

import pytest
import torch
import torch.nn.functional as F

import manual_backprop as mbp
import manual_backprop.functional.activations as MA
from manual_backprop import LayerInputError

from cases import DT

EXTREME = torch.tensor([-1e4, -50.0, -1.0, -1e-8, 1e-8, 1.0, 50.0, 1e4], dtype=DT)

STABILITY = [
    (MA.sigmoid, torch.sigmoid, {}), (MA.tanh, torch.tanh, {}), (MA.relu, F.relu, {}),
    (MA.elu, F.elu, {}), (MA.selu, F.selu, {}), (MA.celu, F.celu, {"alpha": 0.5}), (MA.gelu, F.gelu, {}),
    (MA.gelu, F.gelu, {"approximate": "tanh"}), (MA.silu, F.silu, {}), (MA.mish, F.mish, {}),
    (MA.softplus, F.softplus, {}), (MA.softplus, F.softplus, {"beta": 3.0}), (MA.softsign, F.softsign, {}),
    (MA.logsigmoid, F.logsigmoid, {}), (MA.tanhshrink, F.tanhshrink, {}), (MA.hardswish, F.hardswish, {}),
    (MA.leaky_relu, F.leaky_relu, {}), (MA.softmax, F.softmax, {"dim": 0}),
    (MA.log_softmax, F.log_softmax, {"dim": 0}), (MA.softmin, F.softmin, {"dim": 0}),
]


@pytest.mark.parametrize(("manual", "native", "kwargs"), STABILITY,
                         ids=[f"{m.__name__}-{i}" for i, (m, _, _) in enumerate(STABILITY)])
def test_extreme_inputs_give_the_same_finite_values_and_gradients_as_torch(manual, native, kwargs):
    for dtype, tol in [(torch.float64, 1e-10), (torch.float32, 1e-5)]:
        x = EXTREME.to(dtype).requires_grad_()
        x_native = EXTREME.to(dtype).requires_grad_()
        out, expected = manual(x, **kwargs), native(x_native, **kwargs)
        torch.testing.assert_close(out, expected, rtol=tol, atol=tol)
        (grad,) = torch.autograd.grad(out.sum(), x)
        (grad_native,) = torch.autograd.grad(expected.sum(), x_native)
        assert grad.isfinite().all() == grad_native.isfinite().all()
        torch.testing.assert_close(grad, grad_native, rtol=tol, atol=tol)


def test_rrelu_training_draws_the_same_slopes_as_torch_and_backpropagates_them():
    x = torch.randn(4, 6, dtype=DT, requires_grad=True)
    x_native = x.detach().clone().requires_grad_()
    torch.manual_seed(7)
    out = MA.rrelu(x, 0.1, 0.4, training=True)
    torch.manual_seed(7)
    expected = F.rrelu(x_native, 0.1, 0.4, training=True)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    g = torch.randn_like(out)
    torch.testing.assert_close(torch.autograd.grad(out, x, g)[0], torch.autograd.grad(expected, x_native, g)[0])
    slopes = torch.where(x > 0, 1.0, out / x).detach()
    assert ((slopes >= 0.1) & (slopes <= 0.4) | (slopes == 1)).all()


def test_in_place_activation_keeps_second_derivatives():
    x = torch.randn(5, dtype=DT, requires_grad=True)
    out = MA.silu(x * 1, inplace=True)
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    (second,) = torch.autograd.grad(grad.sum(), x)
    x_native = x.detach().clone().requires_grad_()
    (grad_native,) = torch.autograd.grad(F.silu(x_native).sum(), x_native, create_graph=True)
    torch.testing.assert_close(second, torch.autograd.grad(grad_native.sum(), x_native)[0])


@pytest.mark.parametrize(
    ("call_it", "message"),
    [
        (lambda: MA.prelu(torch.randn(2, 3, 4), torch.ones(2)), r"prelu: weight has 2 parameters .* 3 channels"),
        (lambda: MA.glu(torch.randn(2, 3)), r"glu: halving dimension -1 of input shape \(2, 3\)"),
        (lambda: MA.hardtanh(torch.randn(3), 1.0, -1.0), r"min_val \(1.0\) cannot be greater than max_val"),
        (lambda: MA.gelu(torch.randn(3), approximate="fast"), r"approximate must be 'none' or 'tanh'"),
        (lambda: MA.softshrink(torch.randn(3), -0.5), r"lambda must be greater or equal to 0"),
        (lambda: MA.rrelu(torch.randn(3), training=True, inplace=True), r"inplace=True in training"),
        (lambda: mbp.convert(torch.nn.Softmax2d())(torch.randn(3, 4)), r"Softmax2d: expected a 3-D or 4-D input"),
    ],
)
def test_bad_input_is_a_clear_error(call_it, message):
    with pytest.raises(LayerInputError, match=message):
        call_it()
