"""Converted models against native ones, and the audit on each: the same numbers, and every
derivative from a hand-written backward."""

import copy

import pytest
import torch
from torch.utils._pytree import tree_leaves

import manual_backprop as mbp
from manual_backprop.nn._base import CONTAINERS

from cases import DT, LOSSES, MODEL_CASES, MODULE_CASES, native_model


def _run(model, loss_fn, x, y):
    out = model(x)
    loss = loss_fn(out, y)
    return out, loss


@pytest.mark.parametrize(("activation", "loss_name"), MODEL_CASES)
def test_converted_model_matches_native(activation, loss_name):
    make_loss, make_target = LOSSES[loss_name]
    native = native_model(activation)
    manual = mbp.convert(copy.deepcopy(native), strict=True)
    x, y = torch.randn(6, 5, dtype=DT), make_target(6, 3)
    out_n, loss_n = _run(native, make_loss(), x, y)
    out_m, loss_m = _run(manual, mbp.convert(make_loss()), x, y)
    torch.testing.assert_close(out_m, out_n, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(loss_m, loss_n, rtol=1e-10, atol=1e-10)
    loss_n.backward()
    audit = mbp.audit_backward(loss_m)
    assert audit.ok, str(audit)
    for (name, p_m), (_, p_n) in zip(manual.named_parameters(), native.named_parameters()):
        torch.testing.assert_close(p_m.grad, p_n.grad, rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize(("activation", "loss_name"), MODEL_CASES)
def test_input_gradient_matches_native(activation, loss_name):
    make_loss, make_target = LOSSES[loss_name]
    native = native_model(activation)
    manual = mbp.convert(copy.deepcopy(native))
    x = torch.randn(6, 5, dtype=DT, requires_grad=True)
    y = make_target(6, 3)
    (g_m,) = torch.autograd.grad(mbp.convert(make_loss())(manual(x), y), x)
    (g_n,) = torch.autograd.grad(make_loss()(native(x), y), x)
    torch.testing.assert_close(g_m, g_n, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("native_cls", list(mbp.SUPPORTED_MODULES), ids=lambda c: c.__name__)
def test_every_drop_in_is_a_subclass_with_torchs_name_constructor_and_forward(native_cls):
    import inspect

    manual_cls = mbp.SUPPORTED_MODULES[native_cls]
    assert issubclass(manual_cls, native_cls) and manual_cls.__name__ == native_cls.__name__

    def params(fn):  # names, kinds and defaults (annotations may be strings on one side)
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]

    assert params(manual_cls.__init__) == params(native_cls.__init__)
    assert params(manual_cls.forward) == params(native_cls.forward)


def test_every_drop_in_class_is_registered():
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(mbp.nn.__path__):
        family = importlib.import_module(f"manual_backprop.nn.{info.name}")
        for obj in vars(family).values():
            if (isinstance(obj, type) and issubclass(obj, torch.nn.Module) and obj.__module__ == family.__name__
                    and not obj.__name__.startswith("_")):
                assert obj in (*mbp.SUPPORTED_MODULES.values(), *CONTAINERS.values()), obj


def test_state_dict_is_the_same():
    native = torch.nn.Linear(3, 2)
    manual = mbp.nn.Linear(3, 2)
    manual.load_state_dict(native.state_dict())
    assert manual.state_dict().keys() == native.state_dict().keys()
    native.load_state_dict(manual.state_dict())


def test_cross_entropy_module_options_reach_the_function():
    w = torch.rand(4, dtype=DT) + 0.5
    kwargs = dict(weight=w, ignore_index=2, reduction="sum", label_smoothing=0.1)
    z = torch.randn(5, 4, dtype=DT)
    y = torch.tensor([0, 2, 3, 1, 2])
    torch.testing.assert_close(mbp.nn.CrossEntropyLoss(**kwargs)(z, y), torch.nn.CrossEntropyLoss(**kwargs)(z, y))


def test_shape_error_names_the_layer_path():
    model = mbp.convert(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Sigmoid(), torch.nn.Linear(5, 2)))
    with pytest.raises(mbp.LayerInputError, match=r"layer '2' \(Linear\): linear: input shape \(8, 4\)"):
        model(torch.randn(8, 3))
    with pytest.raises(RuntimeError):  # still a RuntimeError, like torch's own shape errors
        model(torch.randn(8, 3))


def test_loss_error_names_the_loss():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 1)
            self.criterion = torch.nn.MSELoss()

        def forward(self, x, y):
            return self.criterion(self.fc(x), y)

    net = mbp.convert(Net())
    with pytest.raises(mbp.LayerInputError, match=r"layer 'criterion' \(MSELoss\): mse_loss: target shape \(8,\)"):
        net(torch.randn(8, 3), torch.randn(8))


def test_torch_errors_from_a_layer_name_the_layer_too():
    model = mbp.convert(torch.nn.Sequential(torch.nn.Linear(3, 2)))
    with pytest.raises(RuntimeError, match=r"layer '0' \(Linear\): .*dtype"):
        model(torch.randn(2, 3, dtype=torch.float64))


def test_a_module_built_by_hand_names_itself():
    with pytest.raises(mbp.LayerInputError, match=r"layer Linear\(in_features=3"):
        mbp.nn.Linear(3, 2)(torch.randn(1, 4))


def _module_pair(case, dtype):
    native = case.make().to(dtype).train(case.train)
    manual = mbp.convert(copy.deepcopy(native), strict=True)
    return native, manual


def _inputs(case, dtype):
    made = case.inputs()
    cast = [t.detach().to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in made]
    manual = [t.requires_grad_(o.requires_grad) if isinstance(t, torch.Tensor) and t.is_floating_point() else t
              for t, o in zip(cast, made)]
    native = [t.detach().clone().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t
              for t in manual]
    return manual, native


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", MODULE_CASES, ids=[c.id for c in MODULE_CASES])
def test_module_case_matches_native(case, dtype):
    tol = dict(rtol=case.rtol, atol=case.rtol) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    native, manual = _module_pair(case, dtype)
    x_m, x_n = _inputs(case, dtype)
    torch.manual_seed(1)
    out_m = manual(*x_m)
    torch.manual_seed(1)
    out_n = native(*x_n)
    torch.testing.assert_close(out_m, out_n, **tol)  # nested outputs too: (output, (h, c)), ...
    outs_m = [t for t in tree_leaves(out_m) if isinstance(t, torch.Tensor) and t.requires_grad]
    outs_n = [t for t in tree_leaves(out_n) if isinstance(t, torch.Tensor) and t.requires_grad]
    grads_out = [torch.randn_like(t) for t in outs_n]
    torch.autograd.backward(outs_n, grads_out)
    audit = mbp.audit_backward(outs_m, gradient=grads_out)
    assert audit.ok, str(audit)
    for a, b in zip(x_m, x_n):
        if isinstance(a, torch.Tensor) and a.requires_grad:
            torch.testing.assert_close(a.grad, b.grad, **tol)
    for (name, p_m), (_, p_n) in zip(manual.named_parameters(), native.named_parameters()):
        torch.testing.assert_close(p_m.grad, p_n.grad, **tol, msg=name)
    for (name, b_m), (_, b_n) in zip(manual.named_buffers(), native.named_buffers()):
        torch.testing.assert_close(b_m, b_n, **tol, msg=name)
