"""Routing: a converted model's own torch calls (F.relu, x @ w, x + h, x.view, x[i], ...) run
hand-written Functions; calls outside its forward are untouched; what has no rule is named."""

from __future__ import annotations

import copy
import inspect
import io
import pickle
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import manual_backprop as mbp
from manual_backprop.audit import backward_graph
from manual_backprop.routing import RULES, RoutedForward, op_name

from zoo import ZOO

DT = torch.float64


class Lambda(nn.Module):
    """A module whose forward is one expression of its inputs and raw parameters."""

    def __init__(self, fn, *param_shapes):
        super().__init__()
        self.fn = fn
        self.params = nn.ParameterList([nn.Parameter(torch.randn(s, dtype=DT)) for s in param_shapes])

    def forward(self, *inputs):
        return self.fn(*inputs, *self.params)


def _x(*shape):
    return torch.randn(shape, dtype=DT, requires_grad=True)


def _pos(*shape):
    return (torch.rand(shape, dtype=DT) + 0.5).requires_grad_()


#: (id, expression of (inputs..., parameters...), inputs, parameter shapes): each the way a forward writes it
EXPRESSIONS = [
    ("add", lambda x, w: x + w, [_x(3, 4)], [(4,)]),
    ("radd-number", lambda x: 2 + x, [_x(3)], []),
    ("sub-rsub", lambda x, w: (x - w) + (1.5 - x), [_x(3, 4)], [(3, 4)]),
    ("mul-div", lambda x, w: x * w / 3 + 2 / w, [_x(2, 3)], [(3,)]),
    ("pow-rpow", lambda x: x ** 2 + 2 ** x, [_x(4)], []),
    ("neg-abs", lambda x: -x + abs(x), [_x(5)], []),
    ("matmul-operator", lambda x, w: x @ w, [_x(2, 3, 4)], [(4, 5)]),
    ("matmul-t", lambda x, w, b: x @ w.t() + b, [_x(3, 4)], [(5, 4), (5,)]),
    ("T-mT", lambda x, w: (x @ w.T).mT, [_x(3, 4)], [(2, 4)]),
    ("torch-matmul-mm-bmm", lambda x, w: torch.matmul(x, w).sum() + torch.mm(x[0], w).sum()
     + torch.bmm(x, w.expand(2, 4, 3)).sum(), [_x(2, 3, 4)], [(4, 3)]),
    ("addmm", lambda x, w, b: torch.addmm(b, x, w), [_x(3, 4)], [(4, 2), (2,)]),
    ("einsum", lambda x, w: torch.einsum("bij,jk->bik", x, w), [_x(2, 3, 4)], [(4, 5)]),
    ("reductions", lambda x: x.sum() + x.mean(dim=1).sum() + x.var(0).sum() + x.std() + x.amax(1).sum(),
     [_x(3, 4)], []),
    ("max-min", lambda x: x.max() + x.min(dim=1).values.sum() + torch.maximum(x, x.flip(0)).sum(), [_x(3, 4)], []),
    ("elementwise", lambda x: (torch.exp(x) + x.abs().sqrt() + x.sin() + torch.cos(x) + x.square()
                               + x.clamp(-0.5, 0.5) + torch.where(x > 0, x, 0.1 * x)).sum(), [_x(3, 4)], []),
    ("log-rsqrt", lambda x: x.log() + torch.rsqrt(x) + x.reciprocal(), [_pos(5)], []),
    ("activations", lambda x: F.relu(x) + torch.tanh(x) + x.sigmoid() + F.gelu(x) + F.silu(x)
     + F.leaky_relu(x, 0.1), [_x(3, 4)], []),
    ("softmax-forms", lambda x: F.softmax(x, -1) + torch.softmax(x, 1) + x.log_softmax(-1) + x.softmax(dim=0),
     [_x(3, 4)], []),
    ("layer-norm-dropout", lambda x, g, b: F.dropout(F.layer_norm(x, (4,), g, b), 0.3, True), [_x(3, 4)],
     [(4,), (4,)]),
    ("norm-normalize", lambda x: torch.linalg.vector_norm(x, dim=1) + F.normalize(x).sum(1), [_x(3, 4)], []),
    ("view-reshape-flatten", lambda x, w: x.view(2, -1).reshape(-1, 2).flatten() @ w, [_x(2, 3, 2)], [(12,)]),
    ("transpose-permute-contiguous", lambda x: x.transpose(0, 1).contiguous().permute(2, 0, 1) * 2,
     [_x(2, 3, 4)], []),
    ("squeeze-unsqueeze-expand", lambda x, w: x.unsqueeze(1).expand(3, 2, 4).squeeze() * w, [_x(3, 4)],
     [(3, 2, 4)]),
    ("getitem", lambda x: x[:, -1].sum() + x[0] + x[1:, ::2].sum() + x[torch.tensor([0, 0, 2])].sum(0), [_x(3, 4)], []),
    ("cat-stack", lambda x, w: torch.cat([x, w], dim=0).sum(0) + torch.stack([x[0], w[0]]).sum(0),
     [_x(2, 4)], [(3, 4)]),
    ("split-chunk-unbind", lambda x: sum(p.sum() for p in x.split(2, dim=1)) + x.chunk(3)[1].sum()
     + x.unbind(0)[2].sum(), [_x(3, 4)], []),
    ("masked-fill-tril", lambda x: x.masked_fill(torch.ones(4, 4, dtype=torch.bool).triu(1), float("-inf"))
     .softmax(-1).tril(), [_x(4, 4)], []),
    ("gather-index-select", lambda x: x.gather(1, torch.tensor([[0], [2], [1]])).sum() + x.index_select(1,
     torch.tensor([3, 3])).sum(), [_x(3, 4)], []),
    ("casts", lambda x: x.float().double() + x.to(torch.float32).to(DT), [_x(3)], []),
    ("in-place-add", lambda x, w: _iadd(x * 1, w), [_x(3, 4)], [(4,)]),
    ("in-place-mul-relu", lambda x, w: (x * 1).mul_(w).relu_(), [_x(3, 4)], [(3, 4)]),
    ("setitem", lambda x, w: _setitem(x * 1, w), [_x(3, 4)], [(4,)]),
    ("sdpa", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), [_x(2, 5, 4), _x(2, 5, 4),
                                                                                       _x(2, 5, 4)], []),
    ("cross-entropy", lambda x: F.cross_entropy(x, torch.tensor([0, 2, 1])), [_x(3, 4)], []),
]


def _iadd(h, w):
    h += w
    return h


def _setitem(h, w):
    h[1] = w
    return h


def _pair(fn, inputs, param_shapes):
    torch.manual_seed(0)
    native = Lambda(fn, *param_shapes)
    return native, mbp.convert(copy.deepcopy(native))


def _outputs(out):
    return [t for t in (out if isinstance(out, tuple) else (out,)) if t.requires_grad]


@pytest.mark.parametrize(("fn", "inputs", "param_shapes"), [e[1:] for e in EXPRESSIONS],
                         ids=[e[0] for e in EXPRESSIONS])
def test_routed_expression_matches_native_and_is_hand_written(fn, inputs, param_shapes):
    native, manual = _pair(fn, inputs, param_shapes)
    twins = [x.detach().clone().requires_grad_() for x in inputs]
    torch.manual_seed(1)
    out_n = native(*twins)
    torch.manual_seed(1)
    out_m = manual(*inputs)
    torch.testing.assert_close(out_m, out_n, rtol=1e-10, atol=1e-12)
    grad = torch.randn_like(out_m)
    audit = mbp.audit_backward(out_m, gradient=grad)
    assert audit.ok, str(audit)
    out_n.backward(grad)
    for got, want in zip([*inputs, *manual.parameters()], [*twins, *native.parameters()]):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-10, atol=1e-12)


def test_calls_outside_a_converted_forward_are_untouched():
    model = mbp.convert(Lambda(lambda x, w: F.relu(x * w), (3,)))
    x = _x(2, 3)
    assert "ReLU" in backward_graph(model(x)) and "Mul" in backward_graph(model(x))
    assert set(backward_graph(F.relu(x * 2))) == {"ReluBackward0 (native)", "MulBackward0 (native)",
                                                   "AccumulateGrad (no calculus)"}


def test_restore_ends_the_routing():
    model = mbp.convert(Lambda(lambda x, w: F.relu(x * w), (3,)))
    mbp.restore(model)
    assert "forward" not in model.__dict__
    assert "ReluBackward0 (native)" in backward_graph(model(_x(2, 3)))


def test_a_submodule_called_on_its_own_is_routed_too():
    outer = nn.Sequential(Lambda(lambda x: torch.tanh(x)), nn.Linear(3, 2))
    mbp.convert(outer)
    assert set(backward_graph(outer[0](_x(2, 3)))) == {"Tanh", "AccumulateGrad (no calculus)"}


def test_without_grad_nothing_is_routed_and_values_agree():
    native = Lambda(lambda x, w: F.gelu(x @ w).mean(-1), (3, 4))
    manual = mbp.convert(copy.deepcopy(native))
    x = torch.randn(2, 3, dtype=DT)
    for context in (torch.no_grad, torch.inference_mode):
        with context():
            torch.testing.assert_close(manual(x), native(x), rtol=0, atol=0)


def test_a_drop_in_forward_runs_with_the_routing_set_aside_and_it_comes_back_after(monkeypatch):
    """Inside a routed forward, a drop-in's forward (hand-written Functions only) sees no mode: its shape
    checks and its Functions' torch calls skip the handler; the routed code after it is routed again."""
    import manual_backprop.nn.linear as drop_in_linear

    modes, linear = [], mbp.functional.linear

    def spying_linear(*args):
        modes.append(torch.overrides._get_current_function_mode())
        return linear(*args)

    monkeypatch.setattr(drop_in_linear.MF, "linear", spying_linear)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return torch.tanh(self.fc(x * 2))

    native = Net().double()
    manual = mbp.convert(copy.deepcopy(native))
    x = _x(4, 3)
    out = manual(x)
    assert modes == [None]
    assert set(backward_graph(out)) == {"Tanh", "Linear", "Mul", "AccumulateGrad (no calculus)"}
    torch.testing.assert_close(out, native(x))
    class Users(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    with Users() as users:  # a mode of the user's, under the routing: the drop-in still runs under it
        manual(x)
    assert modes[1] is users


class Upsampler(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.inner = nn.Sequential(Lambda(lambda x: F.interpolate(x, scale_factor=2).cumprod(-1)))

    def forward(self, x):
        return self.inner(self.fc(x).unsqueeze(1)).sum()


def test_an_operation_without_a_rule_stays_native_warns_once_and_coverage_names_it():
    model = mbp.convert(Upsampler().double())
    x = _x(2, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model(x).backward()
        model(x)  # once per operation and module
    assert [str(w.message) for w in caught] == [
        "layer 'inner.0' (Lambda): torch.nn.functional.interpolate has no hand-written backward, so its gradient "
        "comes from native UpsampleNearest1DBackward0. manual_backprop.coverage(model, *inputs) lists every such "
        "call; convert(strict=True) makes it an error.",
        "layer 'inner.0' (Lambda): Tensor.cumprod has no hand-written backward, so its gradient comes from native "
        "CumprodBackward0. manual_backprop.coverage(model, *inputs) lists every such call; convert(strict=True) "
        "makes it an error.",
    ]
    fresh = mbp.convert(Upsampler().double())
    mbp.coverage(fresh, x)
    with pytest.warns(UserWarning, match="interpolate has no hand-written backward"):
        fresh(x)  # coverage() reported it without warning; the model's own first forward still warns
    report = mbp.coverage(model, x)
    assert [(op, path) for op, path, _ in report.native] == [
        ("CumprodBackward0", "inner.0"), ("UpsampleNearest1DBackward0", "inner.0")]


def test_strict_raises_at_the_first_native_operation_naming_it_and_the_module():
    model = mbp.convert(Upsampler().double(), strict=True)
    with pytest.raises(mbp.UnsupportedOperationError,
                       match=r"layer 'inner\.0' \(Lambda\): torch\.nn\.functional\.interpolate has no hand-written"):
        model(_x(2, 4))


def test_strict_with_example_inputs_lists_every_native_operation_and_leaves_the_model_native():
    model = Upsampler().double()
    with pytest.raises(mbp.UnsupportedOperationError) as info:
        mbp.convert(model, strict=True, example_inputs=(_x(2, 4),))
    message = str(info.value)
    assert "2 operation(s)" in message
    assert "UpsampleNearest1DBackward0 in inner.0" in message and "CumprodBackward0 in inner.0" in message
    assert type(model.fc) is nn.Linear and "forward" not in model.__dict__


def test_strict_with_example_inputs_passes_a_fully_hand_written_model():
    model = mbp.convert(Lambda(lambda x, w: F.softplus(x @ w), (3, 2)), strict=True, example_inputs=(_x(4, 3),))
    assert model.forward.strict


def test_a_subclass_of_a_supported_layer_is_routed_through_its_forward():
    class MyLinear(nn.Linear):
        def forward(self, x):
            return super().forward(x) * 2

    model = mbp.convert(nn.Sequential(MyLinear(3, 2)).double(), strict=True)
    assert type(model[0]) is MyLinear
    assert set(backward_graph(model(_x(4, 3)))) == {"Linear", "Mul", "AccumulateGrad (no calculus)"}


def test_a_layer_error_inside_a_routed_forward_names_the_module():
    model = mbp.convert(nn.Sequential(Lambda(lambda x, w: x @ w, (3, 2))))
    with pytest.raises(mbp.LayerInputError, match=r"layer '0' \(Lambda\): matmul: input shape \(4, 5\)"):
        model(_x(4, 5))


def test_convert_is_idempotent_and_relabels_paths_inside_a_bigger_model():
    block = Lambda(lambda x: torch.tanh(x))
    mbp.convert(block)
    mbp.convert(block)
    assert isinstance(block.forward, RoutedForward) and block.forward.path == ""
    mbp.convert(nn.Sequential(nn.Linear(2, 2), block))
    assert block.forward.path == "1" and block.forward.module is block


class TanhLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 2, dtype=DT))

    def forward(self, x):
        return torch.tanh(x @ self.w)


def test_routing_survives_deepcopy_pickle_and_torch_save():
    model = mbp.convert(TanhLayer())
    x = _x(4, 3)
    for copied in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert copied.forward.module is copied
        assert set(backward_graph(copied(x))) == {"Matmul", "Tanh", "AccumulateGrad (no calculus)"}
        torch.testing.assert_close(copied(x), model(x))
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=False).forward.module is not model


def test_the_routed_forward_keeps_the_signature_of_the_module_forward():
    class Two(nn.Module):
        def forward(self, x, mask=None, *, scale: float = 1.0):
            return x * scale

    assert list(inspect.signature(mbp.convert(Two()).forward).parameters) == ["x", "mask", "scale"]


def test_a_forward_set_on_the_instance_is_refused_clearly():
    wrapper = TanhLayer()
    wrapper.forward = lambda x: x
    with pytest.raises(TypeError, match=r"module '\(root\)' \(TanhLayer\) has a forward set on the instance"):
        mbp.convert(wrapper)


def test_op_names_read_as_the_user_wrote_them():
    assert op_name(F.interpolate) == "torch.nn.functional.interpolate"
    assert op_name(torch.Tensor.cumsum) == "Tensor.cumsum"
    assert op_name(torch.sort) == "torch.sort"
    assert op_name(F.gelu) == "torch.nn.functional.gelu"
    assert op_name(torch.Tensor.T.__get__) == "Tensor.T"
    assert op_name(torch.linalg.vector_norm) == "torch.linalg.vector_norm"


def test_every_rule_key_is_a_torch_callable_and_every_rule_is_ours():
    for func, rule in RULES.items():
        assert callable(func) and callable(rule)
        module = getattr(rule, "func", rule).__module__
        assert module.startswith("manual_backprop"), (func, rule)


class Checkpointed(nn.Module):
    """A plain function and a module, each checkpointed inside a converted forward."""

    def __init__(self, context_fn=None):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.gain = nn.Parameter(torch.randn(4))
        self.block = nn.Sequential(nn.Tanh(), nn.Linear(4, 4))
        self.context_fn = context_fn

    def forward(self, x):
        from torch.utils.checkpoint import checkpoint

        extra = {"context_fn": self.context_fn} if self.context_fn else {}
        h = checkpoint(lambda h: F.gelu(self.fc(h)) * self.gain + h, x, use_reentrant=False, **extra)
        return checkpoint(self.block, h, use_reentrant=False).sum()


def test_checkpointed_function_with_checkpoint_context_and_checkpointed_module_are_hand_written():
    torch.manual_seed(0)
    native = Checkpointed().double()
    manual = mbp.convert(copy.deepcopy(native), strict=True)
    manual.context_fn = mbp.checkpoint_context
    x = _x(3, 4)
    audit = mbp.audit_backward(manual(x))
    assert audit.ok, str(audit)
    native(x.detach().requires_grad_()).backward()
    for p_m, p_n in zip(manual.parameters(), native.parameters()):
        torch.testing.assert_close(p_m.grad, p_n.grad, rtol=1e-10, atol=1e-12)


def test_a_checkpointed_plain_function_without_checkpoint_context_is_refused_by_torch():
    model = mbp.convert(Checkpointed().double())
    with pytest.raises(Exception, match=r"(?i)recomput"):
        model(_x(3, 4)).backward()


def test_a_routed_model_round_trips_state_dicts_saves_and_switches_modes():
    torch.manual_seed(0)
    example = ZOO["GPT"](DT)
    native = example.model
    manual = mbp.convert(copy.deepcopy(native), strict=True)
    buffer = io.BytesIO()
    torch.save(manual.state_dict(), buffer)
    buffer.seek(0)
    fresh_native = copy.deepcopy(native)
    fresh_native.load_state_dict(torch.load(buffer, weights_only=True))
    fresh_manual = mbp.convert(copy.deepcopy(native), strict=True)
    fresh_manual.load_state_dict(native.state_dict())
    for model in (manual, fresh_native, fresh_manual):
        model.eval()
        torch.testing.assert_close(model(*example.inputs, **example.kwargs), native.eval()(*example.inputs,
                                                                                           **example.kwargs))
    manual.train()
    torch.manual_seed(3)
    train_out = manual(*example.inputs, **example.kwargs)[1]
    torch.manual_seed(3)
    torch.testing.assert_close(train_out, native.train()(*example.inputs, **example.kwargs)[1])
    assert not torch.equal(train_out, manual.eval()(*example.inputs, **example.kwargs)[1])  # dropout was on


def test_hooks_on_a_routed_module_keep_firing_around_the_routed_forward():
    model = TanhLayer()
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append("pre"))
    model.register_forward_hook(lambda m, args, out: seen.append(out.grad_fn.name()))
    model.register_full_backward_hook(lambda m, grad_in, grad_out: seen.append("backward"))
    mbp.convert(model, strict=True)
    model(_x(4, 3)).sum().backward()
    assert seen[0] == "pre" and "Tanh" in seen[1] and seen[-1] == "backward"
