"""A converted nn.Sequential runs its Linear layers and their Sigmoid / Tanh / ReLU as one Function, and only
where nobody could tell: the same numbers, hooks still called, each layer its own node inside layer_by_layer()."""

import copy
import pickle

import pytest
import torch
from torch import nn

import manual_backprop as mbp
from manual_backprop.nn.container import Sequential


def _mlp(activation=nn.Sigmoid):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), activation(), nn.Linear(8, 8), activation(), nn.Linear(8, 3))


def _nodes(loss):
    """Names of the backward graph's nodes, in the order a walk from the loss meets them."""
    seen, order, stack = set(), [], [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        order.append(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return order


def _step(model, x, y):
    loss = mbp.functional.cross_entropy(model(x), y)
    loss.backward()
    return loss, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("activation", [nn.Sigmoid, nn.Tanh, nn.ReLU, lambda: nn.ReLU(inplace=True)])
def test_a_fused_chain_gives_the_very_same_numbers_as_layer_by_layer(activation):
    model = mbp.convert(_mlp(activation))
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    loss_fused, grads_fused = _step(model, x, y)
    assert _nodes(loss_fused)[:2] == ["ClassIndexCrossEntropyBackward", "LinearChainBackward"]
    assert "LinearBackward" not in _nodes(loss_fused)  # the whole MLP is one node
    model.zero_grad()
    with mbp.layer_by_layer():
        loss_apart, grads_apart = _step(model, x, y)
    assert "LinearChainBackward" not in _nodes(loss_apart) and _nodes(loss_apart).count("LinearBackward") == 3
    assert torch.equal(loss_fused, loss_apart)
    assert all(torch.equal(a, b) for a, b in zip(grads_fused, grads_apart))  # bit for bit: the same kernels


def test_a_hooked_layer_is_not_fused_and_its_hook_runs():
    model = mbp.convert(_mlp())
    seen = []
    model[1].register_forward_hook(lambda module, args, output: seen.append(output.shape))
    loss, _ = _step(model, torch.randn(4, 5), torch.randint(0, 3, (4,)))
    names = _nodes(loss)
    assert seen == [torch.Size([4, 8])]
    assert names.count("SigmoidBackward") == 1 and names.count("LinearBackward") == 1  # the hooked activation
    assert names.count("LinearChainBackward") == 1  # and the Linear before it run alone; the layers after, fused


def test_a_global_hook_turns_fusion_off():
    model = mbp.convert(_mlp())
    calls = []
    handle = nn.modules.module.register_module_forward_hook(lambda module, args, output: calls.append(module))
    try:
        loss, _ = _step(model, torch.randn(4, 5), torch.randint(0, 3, (4,)))
    finally:
        handle.remove()
    assert "LinearChainBackward" not in _nodes(loss)
    assert sum(isinstance(m, nn.Linear) for m in calls) == 3


def test_recording_sees_every_layer_of_a_fused_chain():
    model = mbp.convert(_mlp())
    x, y = torch.randn(4, 5), torch.randint(0, 3, (4,))
    with mbp.record_error_terms(model) as rec:
        mbp.functional.cross_entropy(model(x), y).backward()
    assert set(rec.keys()) == {"0", "1", "2", "3", "4"}


def test_the_sequential_is_swapped_back_and_keeps_its_state():
    native = _mlp()
    model = mbp.convert(copy.deepcopy(native))
    assert type(model) is Sequential and isinstance(model, nn.Sequential)
    assert not mbp.is_manual(model)  # a container, not a layer
    assert model.state_dict().keys() == native.state_dict().keys()
    assert type(model[0:2]) is Sequential  # slicing builds the same class
    copied = pickle.loads(pickle.dumps(model))
    assert type(copied) is Sequential
    assert type(mbp.restore(model)) is nn.Sequential


def test_a_bad_input_to_a_fused_chain_names_the_first_linear_layer():
    model = mbp.convert(_mlp())
    with pytest.raises(mbp.LayerInputError, match=r"layer '0' \(Linear\): linear: input shape \(4, 6\) does not end"):
        model(torch.randn(4, 6))


def test_layers_that_do_not_follow_on_run_one_by_one_and_the_one_at_fault_is_named():
    model = mbp.convert(nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(7, 3)))
    with pytest.raises(mbp.LayerInputError, match=r"layer '2' \(Linear\): linear: input shape \(4, 8\)"):
        model(torch.randn(4, 5))


def test_a_second_derivative_through_a_chain_matches_torch():
    torch.manual_seed(0)
    native = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.Sigmoid(), nn.Linear(4, 1)).double()
    model = mbp.convert(copy.deepcopy(native))
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)

    def gradient_norm(m):
        (g,) = torch.autograd.grad(m(x).sum(), x, create_graph=True)
        grads = torch.autograd.grad(g.square().sum(), list(m.parameters()), allow_unused=True)
        return [torch.zeros_like(p) if d is None else d for p, d in zip(m.parameters(), grads)]  # (b_3: unused)

    for a, b in zip(gradient_norm(model), gradient_norm(native)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_a_subclass_of_sequential_with_its_own_forward_is_routed_not_swapped():
    class Twice(nn.Sequential):
        def forward(self, x):
            return super().forward(super().forward(x))

    model = mbp.convert(Twice(nn.Linear(3, 3), nn.Tanh()))
    assert type(model) is Twice
    out = model(torch.randn(2, 3))
    audit = mbp.audit_backward(mbp.functional.mse_loss(out, torch.zeros_like(out)))
    assert audit.ok and audit.graph["Tanh"] == 2 and audit.graph["Linear"] == 2  # not fused: not ours to run
