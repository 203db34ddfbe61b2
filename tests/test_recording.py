"""record_error_terms: δ = ∂C/∂(layer output), exactly what autograd says it is; layer choice, ∂C/∂a,
weight gradients, per-sample values, compiled models, DDP and the search for a nan's origin."""

import copy
import math
import pickle
import subprocess
import sys
import textwrap
import warnings
from collections import OrderedDict

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import manual_backprop as mbp
from manual_backprop.functional._function import ManualFunction

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
    with mbp.record_error_terms(model, weight_grads=True, check_finite=True):
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
    assert type(out.grad_fn).__name__ == "LinearChainBackward"  # no probe after the context: fused again
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


def test_unknown_layer_path_lists_the_module_paths_and_types():
    with pytest.raises(ValueError, match=r"'fc9' matches no module; the modules are '' \(Sequential\), '0' \(Linear\), "
                                         r"'1' \(Sigmoid\), '2' \(Linear\), '3' \(Tanh\), '4' \(Linear\)$"):
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


# -- choosing layers: paths, glob patterns, types --------------------------------------------------
class Block(nn.Module):
    """A residual block of the user's own: routed by convert, not a drop-in."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.Tanh()

    def forward(self, x):
        return x + self.act(self.fc(x))


def _named_net():
    return nn.Sequential(OrderedDict(
        encoder=nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 4)),
        fc1=nn.Linear(4, 4), act1=nn.ReLU(), block=Block(), fc2=nn.Linear(4, 3), head=nn.Linear(3, 2),
    )).to(DT)


def _recorded(model, x, **options):
    with mbp.record_error_terms(model, **options) as rec:
        model(x).sum().backward()
    return rec


@pytest.mark.parametrize(("layers", "expected"), [
    ("encoder.*", ["encoder.0", "encoder.1", "encoder.2"]),
    ("fc?", ["fc1", "fc2"]),
    ("*.act", ["block.act"]),
    (nn.Linear, ["encoder.0", "encoder.2", "fc1", "block.fc", "fc2", "head"]),
    (mbp.nn.Linear, ["encoder.0", "encoder.2", "fc1", "block.fc", "fc2", "head"]),
    ([nn.Tanh, "head", "fc1"], ["encoder.1", "fc1", "block.act", "head"]),
    (["block", "block.*"], ["block", "block.fc", "block.act"]),
])
def test_layers_are_chosen_by_path_pattern_or_type_in_the_models_order(layers, expected):
    model = mbp.convert(_named_net())
    rec = _recorded(model, torch.randn(3, 5, dtype=DT), layers=layers)
    assert list(rec) == expected


def test_the_default_is_every_manual_layer_but_not_the_users_blocks():
    rec = _recorded(mbp.convert(_named_net()), torch.randn(3, 5, dtype=DT))
    assert list(rec) == ["encoder.0", "encoder.1", "encoder.2", "fc1", "act1", "block.fc", "block.act", "fc2", "head"]


def test_a_users_block_output_has_autograds_error_term():
    native = _named_net()
    model = mbp.convert(copy.deepcopy(native))
    x = torch.randn(3, 5, dtype=DT)
    outputs = {}
    native.block.register_forward_hook(lambda m, a, out: outputs.__setitem__("block", out))
    (expected,) = torch.autograd.grad(native(x).pow(2).sum(), outputs["block"])
    with mbp.record_error_terms(model, layers="block") as rec:
        model(x).pow(2).sum().backward()
    torch.testing.assert_close(rec["block"], expected, rtol=1e-12, atol=1e-14)


class Raw(nn.Module):
    """A layer of raw parameters: no drop-in, its own code is routed by convert."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 4, dtype=DT))

    def forward(self, x):
        return torch.tanh(x @ self.w)


def test_a_model_with_routed_code_only_is_recorded_where_named():
    native = nn.Sequential(Raw(), Raw())
    model = mbp.convert(copy.deepcopy(native))
    with pytest.raises(ValueError, match=r"no manual_backprop layers \(its own code is routed\); name the modules to "
                                         r"record with layers=: '' \(Sequential\), '0' \(Raw\), '1' \(Raw\)"):
        mbp.record_error_terms(model)
    x = torch.randn(3, 4, dtype=DT)
    outputs = {}
    native[0].register_forward_hook(lambda m, a, out: outputs.__setitem__("0", out))
    (expected,) = torch.autograd.grad(native(x).pow(2).sum(), outputs["0"])
    rec = _recorded(model, x, layers=Raw)
    assert list(rec) == ["0", "1"]
    with mbp.record_error_terms(model, layers="0") as rec:
        model(x).pow(2).sum().backward()
    torch.testing.assert_close(rec["0"], expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("layers", "message"), [
    ("decoder.*", r"'decoder\.\*' matches no module; the modules are '' \(Sequential\), 'encoder' \(Sequential\), "
                  r"'encoder\.0' \(Linear\), .*'block' \(Block\), 'block\.fc' \(Linear\), .*'head' \(Linear\)$"),
    (nn.Conv2d, r"Conv2d matches no module; the modules are .*'fc1' \(Linear\)"),
    (["fc1", "fc9"], r"'fc9' matches no module"),
])
def test_a_choice_that_matches_nothing_lists_the_modules(layers, message):
    with pytest.raises(ValueError, match=message):
        mbp.record_error_terms(mbp.convert(_named_net()), layers=layers)


def test_a_loss_cannot_be_chosen():
    model = mbp.convert(nn.ModuleDict({"fc": nn.Linear(2, 2), "loss": nn.MSELoss()}))
    with pytest.raises(ValueError, match=r"'loss' is a loss \(MSELoss\); a loss ends the graph"):
        mbp.record_error_terms(model, layers="loss")
    with pytest.raises(ValueError, match=r"'lo\*' matches no module; the modules are '' \(ModuleDict\)|"
                                         r"'lo\*' matches no module; the modules are 'fc' \(Linear\)$"):
        mbp.record_error_terms(model, layers="lo*")


@pytest.mark.parametrize(("layers", "message"), [
    (3, r"module path, a glob pattern or a module type, got int 3"),
    (int, r"torch\.nn\.Module subclass, got int"),
])
def test_a_choice_of_the_wrong_type_is_refused(layers, message):
    with pytest.raises(TypeError, match=message):
        mbp.record_error_terms(mbp.convert(_net()), layers=layers)


# -- ∂C/∂z and ∂C/∂a -----------------------------------------------------------------------------
def test_kinds_tell_layer_outputs_from_activation_outputs():
    model = mbp.convert(_named_net())
    x = torch.randn(3, 5, dtype=DT)
    z_only = _recorded(model, x, kinds="z")
    assert list(z_only) == ["encoder.0", "encoder.2", "fc1", "block.fc", "fc2", "head"]
    a_only = _recorded(model, x, kinds=["a"])
    assert list(a_only) == ["encoder.1", "act1", "block.act"]
    both = _recorded(model, x)
    assert [both.kind(p) for p in ("encoder.0", "encoder.1", "act1")] == ["z", "a", "a"]
    with pytest.raises(KeyError, match="not a recorded layer"):
        a_only.kind("fc1")


def test_delta_at_z_is_the_activation_error_term_times_f_prime():
    """δ = ∂C/∂z = ∂C/∂a ⊙ σ′(z) = ∂C/∂a ⊙ a(1 − a) across the Sigmoid at "1"."""
    model = mbp.convert(_net())
    x, y = torch.randn(7, 5, dtype=DT), torch.randint(0, 2, (7,))
    with mbp.record_error_terms(model) as rec:
        mbp.functional.cross_entropy(model(x), y).backward()
    a = torch.sigmoid(model[0](x)).detach()
    assert (rec.kind("0"), rec.kind("1")) == ("z", "a")
    torch.testing.assert_close(rec["0"], rec["1"] * a * (1 - a), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(("options", "message"), [
    ({"kinds": "x"}, r"kinds must be some of 'z' .* and 'a' .*got \('x',\)"),
    ({"kinds": ()}, r"kinds must be some of"),
    ({"layers": nn.Tanh, "kinds": "z"}, r"none of the chosen layers is of kind \('z',\) \(chosen: '3' \(Tanh\)\)"),
    ({"scale": 0}, r"scale must be a finite number above 0 \(1 / world_size under DDP\), got 0"),
    ({"scale": math.inf}, r"scale must be a finite number above 0"),
])
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        mbp.record_error_terms(mbp.convert(_net()), **options)


def test_a_step_must_be_an_int():
    with pytest.raises(TypeError, match=r"step must be an int .*got 1\.5"):
        mbp.record_error_terms(mbp.convert(_net()), step=1.5)


# -- weight gradients δᵀ · a_prev ------------------------------------------------------------------
def _assert_parameter_grads(rec, model, paths, scale=1.0):
    modules = dict(model.named_modules())
    for path in paths:
        layer = modules[path]
        torch.testing.assert_close(rec.weight_grad(path), scale * layer.weight.grad, rtol=1e-12, atol=1e-14, msg=path)
        if layer.bias is None:
            assert rec.bias_grad(path) is None
        else:
            torch.testing.assert_close(rec.bias_grad(path), scale * layer.bias.grad, rtol=1e-12, atol=1e-14,
                                       msg=path)


def test_linear_weight_gradient_from_delta_and_a_prev_equals_its_grad():
    model = mbp.convert(_net())
    x, y = torch.randn(7, 5, dtype=DT), torch.randint(0, 2, (7,))
    with mbp.record_error_terms(model, weight_grads=True) as rec:
        mbp.functional.cross_entropy(model(x), y).backward()
    _assert_parameter_grads(rec, model, ["0", "2", "4"])


def test_weight_gradient_of_a_layer_used_twice_and_of_sequences_adds_up():
    layer = nn.Linear(3, 3, bias=False).to(DT)
    model = mbp.convert(nn.Sequential(layer, nn.Tanh(), layer))
    with mbp.record_error_terms(model, weight_grads=True, scale=0.5) as rec:
        model(torch.randn(2, 4, 3, dtype=DT)).pow(2).sum().backward()  # (batch, time, features)
    assert len(rec.all("0")) == 2
    _assert_parameter_grads(rec, model, ["0"], scale=0.5)


@pytest.mark.parametrize("make", [
    lambda: (nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2), (3, 2, 7, 6)),
    lambda: (nn.Conv2d(2, 3, (2, 4), padding="same", dilation=(1, 2), bias=False), (2, 2, 6, 9)),
    lambda: (nn.Conv2d(2, 3, 3, padding="valid", stride=(1, 2)), (2, 2, 5, 8)),
    lambda: (nn.Conv1d(3, 2, 3, padding=2, padding_mode="reflect", dilation=2), (2, 3, 9)),
    lambda: (nn.Conv1d(3, 2, 2, padding=1, padding_mode="circular"), (3, 8)),  # unbatched
    lambda: (nn.Conv3d(1, 2, 2, stride=(1, 2, 1)), (2, 1, 3, 4, 3)),
], ids=["strided-groups", "same-asymmetric", "valid", "reflect-dilated", "circular-unbatched", "3d"])
def test_conv_weight_gradient_from_delta_and_a_prev_equals_its_grad(make):
    conv, shape = make()
    model = mbp.convert(nn.Sequential(conv, nn.Tanh()).to(DT))
    with mbp.record_error_terms(model, weight_grads=True) as rec:
        out = model(torch.randn(shape, dtype=DT))
        (out * torch.randn_like(out)).sum().backward()
    _assert_parameter_grads(rec, model, ["0"])


@settings(max_examples=40, deadline=None)
@given(dims=st.integers(1, 2), groups=st.sampled_from([1, 2]), kernel=st.integers(1, 3), stride=st.integers(1, 3),
       dilation=st.integers(1, 2), padding=st.sampled_from([0, 1, 2, "same", "valid"]),
       mode=st.sampled_from(["zeros", "reflect", "replicate", "circular"]), bias=st.booleans(),
       batch=st.integers(1, 3), extra=st.integers(0, 3))
def test_conv_weight_gradient_equals_its_grad_for_any_configuration(dims, groups, kernel, stride, dilation, padding,
                                                                      mode, bias, batch, extra):
    if padding == "same":
        stride = 1  # torch allows 'same' only unstrided
    if mode != "zeros" and padding in ("same", "valid"):
        mode = "zeros"  # a padding mode pads by the numbers; keep those with numbers
    size = dilation * (kernel - 1) + 1 + extra + (0 if mode == "zeros" else 2)
    conv_class = (nn.Conv1d, nn.Conv2d)[dims - 1]
    conv = conv_class(2, 2 * groups, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups,
                      bias=bias, padding_mode=mode)
    model = mbp.convert(nn.Sequential(conv).to(DT))
    with mbp.record_error_terms(model, weight_grads=True) as rec:
        out = model(torch.randn(batch, 2, *[size] * dims, dtype=DT))
        (out * torch.randn_like(out)).sum().backward()
    _assert_parameter_grads(rec, model, ["0"])


def test_weight_gradients_need_asking_and_a_linear_or_conv_layer():
    model = mbp.convert(_net())
    x = torch.randn(2, 5, dtype=DT)
    with pytest.raises(KeyError, match=r"no weight gradient for '0': open the recording with .*weight_grads=True"):
        _recorded(model, x).weight_grad("0")
    rec = _recorded(model, x, weight_grads=True)
    with pytest.raises(KeyError, match=r"no bias gradient for '1': it is computed for Linear and Conv1d/2d/3d layers, "
                                       r"and '1' is Sigmoid"):
        rec.bias_grad("1")
    with pytest.raises(KeyError, match="not a recorded layer"):
        rec.weight_grad("9")


# -- per sample, through torch.func -----------------------------------------------------------------
def test_per_sample_error_terms_and_gradients_equal_one_sample_at_a_time():
    model = mbp.convert(_net())
    x, y = torch.randn(5, 5, dtype=DT), torch.randint(0, 2, (5,))
    ps = mbp.per_sample_error_terms(model, mbp.functional.cross_entropy, x, y, weight_grads=True)
    assert all(p.grad is None for p in model.parameters())  # .grad is left alone
    assert list(ps) == ["0", "1", "2", "3", "4"] and ps["2"].shape == (5, 3)
    for n in range(5):
        with mbp.record_error_terms(model) as one:
            loss = mbp.functional.cross_entropy(model(x[n]), y[n])
            loss.backward()
        torch.testing.assert_close(ps.losses[n], loss.detach(), rtol=1e-12, atol=0)
        for path in one:
            torch.testing.assert_close(ps[path][n], one[path], rtol=1e-10, atol=1e-14, msg=path)
        for path in ("0", "2", "4"):
            torch.testing.assert_close(ps.weight_grad(path)[n], model[int(path)].weight.grad, rtol=1e-10, atol=1e-14)
            torch.testing.assert_close(ps.bias_grad(path)[n], model[int(path)].bias.grad, rtol=1e-10, atol=1e-14)
        model.zero_grad(set_to_none=True)


def test_per_sample_on_a_cnn_as_batches_of_one():
    model = mbp.convert(nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(),
                                      nn.Linear(3 * 4 * 4, 4)).to(DT))
    x, y = torch.randn(3, 2, 4, 4, dtype=DT), torch.randint(0, 4, (3,))
    ps = mbp.per_sample_error_terms(model, mbp.functional.cross_entropy, x, y, layers=["0", nn.Linear],
                                    kinds="z", weight_grads=True, batch_of_one=True)
    assert list(ps) == ["0", "3"] and ps["0"].shape == (3, 1, 3, 4, 4)
    assert ps.bias_grad("0") is None
    for n in range(3):
        with mbp.record_error_terms(model, layers="0") as one:
            mbp.functional.cross_entropy(model(x[n:n + 1]), y[n:n + 1]).backward()
        torch.testing.assert_close(ps["0"][n], one["0"], rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(ps.weight_grad("0")[n], model[0].weight.grad, rtol=1e-10, atol=1e-14)
        model.zero_grad(set_to_none=True)


def test_per_sample_errors():
    model = mbp.convert(_net())
    x, y = torch.randn(4, 5, dtype=DT), torch.randint(0, 2, (4,))
    with pytest.raises(ValueError, match=r"inputs \(4, 5\) and targets \(3,\) must have the same number of samples"):
        mbp.per_sample_error_terms(model, mbp.functional.cross_entropy, x, y[:3])
    with pytest.raises(ValueError, match=r"loss_fn must return one number per sample, got shape \(2,\)"):
        mbp.per_sample_error_terms(model, lambda out, target: out, x, y)
    with pytest.raises(TypeError, match=r"inputs and targets must be tensors, got list"):
        mbp.per_sample_error_terms(model, mbp.functional.cross_entropy, [x], y)
    ps = mbp.per_sample_error_terms(model, mbp.functional.cross_entropy, x, y, layers="0")
    with pytest.raises(KeyError, match=r"weight_grads=True"):
        ps.weight_grad("0")


# -- where did the nan come from -------------------------------------------------------------------
class InfGradient(ManualFunction):
    """out = x, and a broken backward: ∂C/∂x = ∂C/∂out · ∞ (nan where ∂C/∂out = 0)."""

    @staticmethod
    def forward(x):
        return x.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out * math.inf  # ∂out/∂x = 1, broken on purpose to ∞


class Blame(nn.Module):
    def forward(self, x):
        return InfGradient.call(x)


def _deep_net(blame_after=None):
    layers = OrderedDict()
    for i in range(1, 9):
        layers[f"fc{i}"], layers[f"act{i}"] = nn.Linear(6, 6), nn.Tanh()
        if blame_after == f"act{i}":
            layers["blame"] = Blame()
    return mbp.convert(nn.Sequential(layers).to(DT))


_DEEP_PATHS = [f"{kind}{i}" for i in range(1, 9) for kind in ("fc", "act")]


def _names_only(message, path):
    assert f"{path!r}" in message
    for other in _DEEP_PATHS:
        assert other == path or f"{other!r}" not in message, other


def test_a_nan_born_in_backward_is_traced_to_the_first_layer_whose_delta_is_not_finite():
    model = _deep_net(blame_after="act5")
    x = torch.randn(4, 6, dtype=DT)
    with pytest.raises(mbp.NonFiniteError) as info, mbp.record_error_terms(model, check_finite=True, step=41) as rec:
        model(x).pow(2).mean().backward()
    error = info.value
    assert (error.layer, error.phase, error.step) == ("act5", "backward", 41)
    assert error.bad_count == 24 and error.numel == 24
    assert all(math.isfinite(v) for v in (*error.input_range, *error.output_range))
    assert -1 <= error.output_range[0] <= error.output_range[1] <= 1  # a tanh's output
    _names_only(str(error), "act5")
    assert str(error).startswith("step 41: layer 'act5' (Tanh) is the first layer in backward order")
    assert "24 of 24 entries of δ = ∂C/∂(its output) are nan or inf" in str(error)
    assert rec["act6"].isfinite().all() and not rec["fc1"].isfinite().all()  # everything below is lost too
    assert isinstance(error, RuntimeError) and isinstance(error, FloatingPointError)
    copied = pickle.loads(pickle.dumps(error))  # crosses process boundaries (DDP spawn) intact
    assert (str(copied), copied.layer, copied.input_range) == (str(error), "act5", error.input_range)


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_a_nan_born_in_forward_is_traced_to_the_layer_that_made_it(bad):
    model = _deep_net()
    with torch.no_grad():
        model.fc3.weight[2, 0] = bad
    x = torch.randn(4, 6, dtype=DT)
    with mbp.record_error_terms(model, check_finite=True) as rec:
        model(x).pow(2).mean().backward()
        with pytest.raises(mbp.NonFiniteError) as info:
            rec.check(step=7)
        error = info.value
        assert (error.layer, error.phase, error.step) == ("fc3", "forward", 7)
        assert error.bad_count >= 1 and error.numel == 24
        assert all(math.isfinite(v) for v in error.input_range)
        assert not all(math.isfinite(v) for v in error.output_range)
        assert "its input was finite, so the value was born in this layer's forward" in str(error)
        _names_only(str(error), "fc3")
        rec._check_finite = False  # leave the with block without the check at its end


def test_a_non_finite_input_is_reported_at_the_first_layer_as_coming_from_before():
    model = _deep_net()
    x = torch.randn(4, 6, dtype=DT)
    x[1, 2] = math.nan
    rec = mbp.record_error_terms(model, check_finite=True)
    with pytest.raises(mbp.NonFiniteError, match=r"^step 0: layer 'fc1' \(Linear\) is the first recorded layer "
                                                 r"whose output is non-finite in the forward: 6 of 24 .*its input was "
                                                 r"already non-finite, so the value came from before it"), rec:
        model(x)  # no backward needed: the forward is checked first


def test_finite_runs_pass_the_check_with_one_reduction_per_layer_and_direction():
    model = _deep_net()

    class CountOps(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    with mbp.record_error_terms(model, check_finite=True, step=10) as rec:
        for _ in range(3):
            model(torch.randn(4, 6, dtype=DT)).pow(2).mean().backward()
        with CountOps() as counted:
            rec.check()
    assert rec.step == 12  # the third forward
    # isfinite is elementwise (abs, ne, eq, mul); then one reduction, all(), for each of the 16
    # (min, max) pairs of the forward and for each of the 16 δ of the backward
    assert counted.names.count("all") == 2 * 16
    assert not {"sum", "amax", "amin", "aminmax", "max", "min"} & set(counted.names)  # counts only on a failure


def test_the_check_needs_check_finite_and_stays_out_of_another_exception():
    model = _deep_net(blame_after="act2")
    with pytest.raises(RuntimeError, match=r"check\(\) needs the ranges recorded by check_finite=True"):
        _recorded(model, torch.randn(2, 6, dtype=DT)).check()
    with pytest.raises(ZeroDivisionError), mbp.record_error_terms(model, check_finite=True):
        model(torch.randn(2, 6, dtype=DT)).sum().backward()
        raise ZeroDivisionError  # the nan's report does not hide the error already on its way out


# -- compiled models and DDP ---------------------------------------------------------------------------
@pytest.mark.slow
def test_recording_the_compiled_module_keeps_one_graph_with_every_option():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = _deep_net()
    reference = copy.deepcopy(model)
    compiled = torch.compile(model, fullgraph=True)
    for step in range(3):
        x = torch.randn(4, 6, dtype=DT)
        options = {"weight_grads": True, "check_finite": True, "step": step, "layers": ["fc*", nn.Tanh]}
        with mbp.record_error_terms(reference, **options) as expected:
            reference(x).pow(2).mean().backward()
        with mbp.record_error_terms(compiled, **options) as rec:
            compiled(x).pow(2).mean().backward()
        assert list(rec) == list(expected) == _DEEP_PATHS
        for path in expected:
            torch.testing.assert_close(rec[path], expected[path], rtol=1e-12, atol=1e-15)
            if path.startswith("fc"):
                torch.testing.assert_close(rec.weight_grad(path), expected.weight_grad(path), rtol=1e-12, atol=1e-15)
        assert rec.step == step
        model.zero_grad(), reference.zero_grad()
    assert not counters["graph_break"]
    assert counters["stats"]["unique_graphs"] == 1  # the probes come in as inputs: no recompiles

    with torch.no_grad():
        model.fc6.weight[0, 0] = math.nan
    with pytest.raises(mbp.NonFiniteError, match=r"^step 3: layer 'fc6' \(Linear\) is the first recorded layer"), \
            mbp.record_error_terms(compiled, check_finite=True, step=3):
        compiled(torch.randn(4, 6, dtype=DT)).sum().backward()
    assert not counters["graph_break"]


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.out = nn.Linear(4, 3)

    def forward(self, tokens):
        return self.out(self.embed(tokens))


@pytest.mark.slow
def test_a_compiled_model_whose_shapes_fake_tensors_cannot_find_learns_them_from_its_first_forward():
    model = mbp.convert(Tagger().to(DT))  # the embedding checks its indices: a data-dependent shape to fake tensors
    reference = copy.deepcopy(model)
    compiled = torch.compile(model)
    for step in range(3):
        tokens = torch.randint(0, 10, (2, 5))
        with mbp.record_error_terms(reference) as expected:
            reference(tokens).pow(2).sum().backward()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with mbp.record_error_terms(compiled) as rec:
                compiled(tokens).pow(2).sum().backward()
        said = [str(w.message) for w in caught if "record_error_terms" in str(w.message)]
        assert len(said) == (step == 0), said  # the first recording says the graph breaks; later ones know
        assert list(rec) == ["embed", "out"]
        for path in expected:
            torch.testing.assert_close(rec[path], expected[path], rtol=1e-12, atol=1e-15)


_DDP_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    from torch import nn
    import manual_backprop as mbp


    def model():
        torch.manual_seed(0)
        return mbp.convert(nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2)).double())


    def data():
        torch.manual_seed(1)
        return torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 2, (8,))


    def run(rank, world, port, out):
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        net = model()
        ddp = nn.parallel.DistributedDataParallel(net)
        x, y = data()
        rows = slice(rank * 4, rank * 4 + 4)
        with mbp.record_error_terms(net, scale=1 / world, weight_grads=True) as rec:
            mbp.functional.cross_entropy(ddp(x[rows]), y[rows]).backward()
        torch.save({"delta": {p: rec[p] for p in rec}, "weight_grad": {p: rec.weight_grad(p) for p in ("0", "2")},
                    "grad": {p: net[int(p)].weight.grad for p in ("0", "2")}}, f"{out}/rank{rank}.pt")
        dist.destroy_process_group()


    if __name__ == "__main__":
        mp.spawn(run, args=(2, int(sys.argv[1]), sys.argv[2]), nprocs=2)
""")


@pytest.mark.slow
def test_under_ddp_scale_one_over_world_size_gives_the_global_losss_delta(tmp_path):
    import socket

    script = tmp_path / "ddp_run.py"
    script.write_text(_DDP_SCRIPT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run([sys.executable, str(script), str(port), str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    namespace = {}
    exec(compile(_DDP_SCRIPT.split('if __name__')[0], "ddp_run", "exec"), namespace)
    net, (x, y) = namespace["model"](), namespace["data"]()
    # the global loss: DDP averages the two ranks' gradients, so C = (C_0 + C_1) / 2 = the mean over all 8
    with mbp.record_error_terms(net) as whole:
        mbp.functional.cross_entropy(net(x), y).backward()
    for rank, found in enumerate(ranks):
        for path, delta in found["delta"].items():
            torch.testing.assert_close(delta, whole[path][rank * 4:rank * 4 + 4], rtol=1e-12, atol=1e-15)
    for p in ("0", "2"):
        shares = ranks[0]["weight_grad"][p] + ranks[1]["weight_grad"][p]
        torch.testing.assert_close(shares, net[int(p)].weight.grad, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(ranks[0]["grad"][p], net[int(p)].weight.grad, rtol=1e-12, atol=1e-15)
