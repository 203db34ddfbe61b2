"""The delta rule (Error_j = O_j(1 − O_j)(T_j − O_j), w_ij += η·O_i·Error_j) is SGD on ½ Σ (T − O)²."""

import copy
import itertools
import re
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import manual_backprop as mbp

from cases import DT, han_kamber


@st.composite
def sigmoid_networks(draw):
    """Linear → Sigmoid chains: 1-4 layers of widths 1-6, random weights, sometimes nested or converted."""
    torch.manual_seed(draw(st.integers(0, 2**31 - 1)))
    depth = draw(st.integers(1, 4))
    widths = draw(st.lists(st.integers(1, 6), min_size=depth + 1, max_size=depth + 1))
    modules = []
    for n_in, n_out in itertools.pairwise(widths):
        block = [nn.Linear(n_in, n_out, bias=draw(st.booleans())), nn.Sigmoid()]
        modules += [nn.Sequential(*block)] if draw(st.booleans()) else block
    net = nn.Sequential(*modules).to(DT)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p))
    return mbp.convert(net) if draw(st.booleans()) else net


def batch(net, n):
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    return torch.randn(n, linears[0].in_features, dtype=DT), torch.rand(n, linears[-1].out_features, dtype=DT)


def sgd_step(net, x, target, lr, half):
    """One torch.optim.SGD step by native autograd on a native copy, on ½ Σ (T − O)² or Σ (T − O)²."""
    twin = mbp.restore(copy.deepcopy(net))
    squared_error = ((target - twin(x)) ** 2).sum()
    (squared_error / 2 if half else squared_error).backward()
    torch.optim.SGD(twin.parameters(), lr=lr).step()
    return twin


def assert_same_parameters(net, twin):
    for (name, p), q in zip(net.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12, msg=name)


@settings(max_examples=40, deadline=None)
@given(net=sigmoid_networks(), n=st.integers(1, 5), lr=st.floats(0.01, 2.0))
def test_the_delta_rule_is_sgd_on_half_the_squared_error(net, n, lr):
    x, target = batch(net, n)
    twin = sgd_step(net, x, target, lr, half=True)
    mbp.delta_rule_step(net, x, target, lr)
    assert_same_parameters(net, twin)


@settings(max_examples=25, deadline=None)
@given(net=sigmoid_networks(), n=st.integers(1, 5), lr=st.floats(0.01, 1.0))
def test_without_the_half_sgd_with_rate_eta_is_the_delta_rule_with_two_eta(net, n, lr):
    """C = Σ (T − O)² has ∂C/∂O = 2(O − T): the factor 2 moves into the rate."""
    x, target = batch(net, n)
    twin = sgd_step(net, x, target, lr, half=False)
    mbp.delta_rule_step(net, x, target, 2 * lr)
    assert_same_parameters(net, twin)


@settings(max_examples=25, deadline=None)
@given(net=sigmoid_networks(), n=st.integers(1, 5))
def test_error_is_minus_delta_and_o_is_the_sigmoid_output(net, n):
    x, target = batch(net, n)
    linears = [path for path, m in net.named_modules() if isinstance(m, nn.Linear)]
    sigmoids = [path for path, m in net.named_modules() if isinstance(m, nn.Sigmoid)]
    twin = mbp.convert(copy.deepcopy(net))
    outputs = {}
    hooks = [twin.get_submodule(s).register_forward_hook(lambda m, i, o, s=s: outputs.__setitem__(s, o.detach()))
             for s in sigmoids]
    with mbp.record_error_terms(twin, layers=linears) as rec:
        (mbp.functional.mse_loss(twin(x), target, reduction="sum") / 2).backward()  # C = ½ Σ (T − O)²
    for hook in hooks:
        hook.remove()

    step = mbp.delta_rule_step(net, x, target, 0.5)
    assert list(step.errors) == linears == list(step.outputs)
    for linear, sigmoid in zip(linears, sigmoids):
        torch.testing.assert_close(step.errors[linear], -rec[linear], rtol=1e-12, atol=1e-14)  # Error = −δ
        torch.testing.assert_close(step.outputs[linear], outputs[sigmoid], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(step.inputs, x, rtol=0, atol=0)


def test_han_kamber_book_values():
    """Tables 9.2 and 9.3 of Han & Kamber (see test_han_kamber.py), in the book's own notation."""
    net = han_kamber()
    step = mbp.delta_rule_step(net, [1.0, 0.0, 1.0], [1.0], lr=0.9)
    o4, o5 = step.outputs["0"][0].tolist()
    (o6,) = step.outputs["2"][0].tolist()
    assert (round(o4, 3), round(o5, 3), round(o6, 3)) == (0.332, 0.525, 0.474)
    err4, err5 = step.errors["0"][0].tolist()
    (err6,) = step.errors["2"][0].tolist()
    for got, book in ((err6, 0.1311), (err5, -0.0065), (err4, -0.0087)):
        assert abs(got - book) < 1e-4  # the book rounds O6 to 0.474 first; see test_han_kamber.py
    updated = [round(v, 3) for p in net.parameters() for v in p.detach().flatten().tolist()]
    #           w14    w24  w34     w15     w25  w35    θ4      θ5     w46     w56     θ6
    assert updated == [0.192, 0.4, -0.508, -0.306, 0.1, 0.194, -0.408, 0.194, -0.261, -0.138, 0.218]
    text = str(step)
    assert "Error_j = O_j(1 − O_j)(T_j − O_j)" in text and "0.1312" in text and "0.3318" in text


@pytest.mark.parametrize(("network", "says"), [
    (nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1), nn.Sigmoid()), "layer '1' (ReLU) is not a Sigmoid"),
    (nn.Sequential(nn.Linear(3, 2), nn.Sigmoid(), nn.Sequential(nn.Linear(2, 1), nn.Tanh())),
     "layer '2.1' (Tanh) is not a Sigmoid"),
    (nn.Sequential(nn.Linear(3, 2), nn.Sigmoid(), nn.Linear(2, 1)), "layer '2' (Linear) is not followed by a Sigmoid"),
    (nn.Sequential(nn.Linear(3, 1), nn.Sigmoid(), nn.Sigmoid()), "layer '0' (Linear) is followed by 2 Sigmoids"),
    (nn.Sequential(nn.Sigmoid(), nn.Linear(3, 1), nn.Sigmoid()), "layer '0' (Sigmoid) comes before the first Linear"),
    (nn.Sequential(nn.Conv1d(1, 1, 1), nn.Sigmoid()), "cannot trace layer '0' (Conv1d)"),
    (nn.Linear(3, 1), "layer (root) (Linear) is not followed by a Sigmoid"),
])
def test_a_network_that_is_not_sigmoid_is_refused_naming_the_layer(network, says):
    with pytest.raises(TypeError) as err:
        mbp.delta_rule_step(network, [1.0, 0.0, 1.0], [1.0], lr=0.1)
    assert says in str(err.value) and "Linear → Sigmoid, ending in a Sigmoid" in str(err.value)


def test_bad_inputs_targets_and_rate():
    net = nn.Sequential(nn.Linear(3, 2), nn.Sigmoid()).to(DT)
    with pytest.raises(ValueError, match=r"inputs of shape \(1, 2\); expected \(N, 3\)"):
        mbp.delta_rule_step(net, [[1.0, 0.0]], [[1.0, 0.0]], lr=0.1)
    with pytest.raises(ValueError, match=r"targets of shape \(1, 1\); the network's output has shape \(1, 2\)"):
        mbp.delta_rule_step(net, [[1.0, 0.0, 1.0]], [[1.0]], lr=0.1)
    with pytest.raises(TypeError, match="lr"):
        mbp.delta_rule_step(net, [[1.0, 0.0, 1.0]], [[1.0, 0.0]], lr="fast")


def test_the_table_in_docs_teaching_is_what_delta_rule_step_prints():
    page = (Path(__file__).resolve().parents[1] / "docs" / "teaching.md").read_text()
    shown = re.search(r"```text\n(delta rule step.+?)```", page, re.S).group(1)
    net = nn.Sequential(nn.Linear(3, 2), nn.Sigmoid(), nn.Linear(2, 1), nn.Sigmoid()).to(DT)
    book = {"0.weight": [[0.2, 0.4, -0.5], [-0.3, 0.1, 0.2]], "0.bias": [-0.4, 0.2], "2.weight": [[-0.3, -0.2]],
            "2.bias": [0.1]}
    net.load_state_dict({name: torch.tensor(value, dtype=DT) for name, value in book.items()})
    assert str(mbp.delta_rule_step(net, [1.0, 0.0, 1.0], [1.0], lr=0.9)) + "\n" == shown
