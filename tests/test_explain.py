"""explain(): every factor of the chain rule for one weight, checked against native autograd.

The reference gradients here come from torch's own autograd on a native copy of the network, with
torch's own losses; the trace computes its numbers by plain arithmetic.
"""

import contextlib
import copy
import io
import itertools
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import manual_backprop as mbp

from cases import DT, han_kamber

#: activations a random network draws from (a factory each). CELU's α is one float32 holds exactly:
#: torch's native CELU backward computes 1/α as a float32 (derivatives.yaml: 1.0/alpha.toFloat()), so
#: for α = 0.7 the reference itself is off by ~1e-8 in float64, while the trace's e^(z/α) is exact.
ACTIVATIONS = [nn.Sigmoid, nn.Tanh, nn.ReLU, lambda: nn.LeakyReLU(0.1), nn.Identity, nn.ELU, nn.SELU,
               lambda: nn.CELU(0.5), nn.GELU, lambda: nn.GELU("tanh"), nn.SiLU, nn.Mish, nn.Softplus, nn.Softsign,
               nn.Hardtanh, nn.ReLU6, nn.Hardswish, nn.LogSigmoid, nn.Tanhshrink, lambda: nn.Softshrink(0.2)]
LOSSES = ["mse", "sse", "half_sse", "cross_entropy", "MSELoss(sum)", "CrossEntropyLoss(sum)"]


def native_loss(name, out, y):
    """C with torch's own functions, for the reference gradient."""
    return {
        "mse": lambda: F.mse_loss(out, y),
        "sse": lambda: F.mse_loss(out, y, reduction="sum"),
        "half_sse": lambda: 0.5 * ((out - y) ** 2).sum(),
        "cross_entropy": lambda: F.cross_entropy(out, y),
        "MSELoss(sum)": lambda: F.mse_loss(out, y, reduction="sum"),
        "CrossEntropyLoss(sum)": lambda: F.cross_entropy(out, y, reduction="sum"),
    }[name]()


def loss_argument(name):
    """What explain is given: the name, or a loss module."""
    return {"MSELoss(sum)": nn.MSELoss(reduction="sum"),
            "CrossEntropyLoss(sum)": nn.CrossEntropyLoss(reduction="sum")}.get(name, name)


def targets_for(name, n, width):
    if "ross" in name:  # cross_entropy, CrossEntropyLoss(sum): class indices
        return torch.randint(0, width, (n,))
    return torch.rand(n, width, dtype=DT)


def reference(model, weight, x, y, loss):
    """∂C/∂(weight) by native autograd on a native copy."""
    native = mbp.restore(copy.deepcopy(model))
    param = dict(native.named_parameters())[weight]
    return torch.autograd.grad(native_loss(loss, native(x), y), param)[0]


@st.composite
def networks(draw):
    """A random chain: 1-4 Linear layers of widths 1-6, each followed by 0-2 mixed activations,
    sometimes nested in a sub-Sequential, sometimes converted."""
    torch.manual_seed(draw(st.integers(0, 2**31 - 1)))
    depth = draw(st.integers(1, 4))
    widths = draw(st.lists(st.integers(1, 6), min_size=depth + 1, max_size=depth + 1))
    modules = []
    for n_in, n_out in itertools.pairwise(widths):
        block = [nn.Linear(n_in, n_out, bias=draw(st.booleans()))]
        block += [ACTIVATIONS[i]() for i in draw(st.lists(st.integers(0, len(ACTIVATIONS) - 1), max_size=2))]
        modules += [nn.Sequential(*block)] if draw(st.booleans()) else block
    model = nn.Sequential(*modules).to(DT)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
    return mbp.convert(model) if draw(st.booleans()) else model


@settings(max_examples=40, deadline=None)
@given(model=networks(), loss=st.sampled_from(LOSSES), n=st.integers(1, 5), lr=st.floats(0.01, 2.0),
       data=st.data())
def test_every_factor_multiplies_to_autograds_gradient(model, loss, n, lr, data):
    params = dict(model.named_parameters())
    weight = data.draw(st.sampled_from(sorted(params)), label="weight")
    shape = params[weight].shape
    index = tuple(data.draw(st.integers(0, size - 1), label=f"index {d}") for d, size in enumerate(shape))
    n_in = next(m for m in model.modules() if isinstance(m, nn.Linear)).in_features
    width = [m for m in model.modules() if isinstance(m, nn.Linear)][-1].out_features
    x, y = torch.randn(n, n_in, dtype=DT), targets_for(loss, n, width)

    trace = mbp.explain(model, x, y, loss=loss_argument(loss), weight=weight, index=index, lr=lr)

    expected = reference(model, weight, x, y, loss)[index].item()
    assert abs(trace.grad - expected) <= 1e-10 * max(1.0, abs(expected))
    assert abs(trace.manual_grad - expected) <= 1e-10 * max(1.0, abs(expected))
    assert abs(trace.autograd_grad - expected) <= 1e-10 * max(1.0, abs(expected))
    assert trace.agrees
    # the three factors, per sample, and their sum
    torch.testing.assert_close(trace.dz_dw * trace.da_dz * trace.dC_da, trace.products, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(trace.da_dz * trace.dC_da, trace.delta, rtol=1e-12, atol=1e-14)
    assert abs(trace.products.sum().item() - trace.grad) <= 1e-12 * max(1.0, abs(trace.grad))
    # a hidden unit's ∂C/∂a_j is its downstream sum, term by term
    assert trace.is_output == (not trace.downstream)
    if trace.downstream:
        torch.testing.assert_close(sum(t.product for t in trace.downstream), trace.dC_da, rtol=1e-12, atol=1e-14)
        for t in trace.downstream:
            torch.testing.assert_close(t.delta_k * t.w_kj, t.product, rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(t.delta_k, trace.layers[1].delta[:, t.k], rtol=0, atol=0)
    # the forward values end in the network's output
    torch.testing.assert_close(trace.layers[-1].a, model(x).detach(), rtol=1e-12, atol=1e-14)

    # the update is one step of torch.optim.SGD
    twin = mbp.restore(copy.deepcopy(model))
    optimizer = torch.optim.SGD(twin.parameters(), lr=lr)
    native_loss(loss, twin(x), y).backward()
    optimizer.step()
    assert trace.old == params[weight][index].item()
    assert abs(trace.new - dict(twin.named_parameters())[weight][index].item()) <= 1e-12 * max(1.0, abs(trace.new))


# the book's name, the parameter, the index, the book's updated value, and the book's Err_j of the unit
BOOK = [("w46", "2.weight", (0, 0), -0.261, 0.1311), ("w56", "2.weight", (0, 1), -0.138, 0.1311),
        ("θ6", "2.bias", (0,), 0.218, 0.1311),
        ("w14", "0.weight", (0, 0), 0.192, -0.0087), ("w24", "0.weight", (0, 1), 0.4, -0.0087),
        ("w34", "0.weight", (0, 2), -0.508, -0.0087), ("θ4", "0.bias", (0,), -0.408, -0.0087),
        ("w15", "0.weight", (1, 0), -0.306, -0.0065), ("w25", "0.weight", (1, 1), 0.1, -0.0065),
        ("w35", "0.weight", (1, 2), 0.194, -0.0065), ("θ5", "0.bias", (1,), 0.194, -0.0065)]


@pytest.mark.parametrize(("name", "weight", "index", "updated", "error"), BOOK, ids=[b[0] for b in BOOK])
def test_han_kamber_through_explain(name, weight, index, updated, error):
    trace = mbp.explain(han_kamber(), [1.0, 0.0, 1.0], [1.0], loss="half_sse", weight=weight, index=index, lr=0.9)
    assert abs(-trace.delta[0].item() - error) < 1e-4  # Err_j = −δ_j, to the book's 4 decimals
    assert round(trace.new, 3) == updated  # to the book's 3 decimals
    assert trace.agrees


def test_han_kamber_hidden_weight_reads_like_the_book():
    """w14: Err4 = O4(1 − O4) · Err6 · w46, term by term."""
    trace = mbp.explain(han_kamber(), [1.0, 0.0, 1.0], [1.0], loss="half_sse", weight="0.weight", index=(0, 0),
                        lr=0.9)
    (term,) = trace.downstream
    assert term.k == 0 and term.w_kj == -0.3
    assert abs(-term.delta_k.item() - 0.1311) < 1e-4  # Err6
    o4 = trace.layers[0].a[0, 0].item()
    assert abs(o4 - 0.332) < 1e-3  # O4, as the book rounds it
    torch.testing.assert_close(trace.da_dz, torch.tensor([o4 * (1 - o4)], dtype=DT))  # σ′ = O(1 − O)
    assert trace.dz_dw.tolist() == [1.0]  # x1 = 1


def test_text_and_markdown_show_the_numbers():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 2), nn.Sigmoid()).to(DT)
    trace = mbp.explain(model, torch.randn(2, 3, dtype=DT), torch.rand(2, 2, dtype=DT), weight="0.weight",
                        index=(1, 2), lr=0.3)
    text, markdown = str(trace), trace.to_markdown()
    numbers = [trace.grad, trace.old, trace.step, trace.new, trace.loss_value]
    for n in range(2):
        numbers += [trace.dz_dw[n], trace.da_dz[n], trace.dC_da[n], trace.delta[n], trace.products[n]]
        numbers += [t.delta_k[n] for t in trace.downstream] + [t.product[n] for t in trace.downstream]
    numbers += [t.w_kj for t in trace.downstream]
    for x in numbers:
        shown = f"{float(x):.4g}"
        assert shown in text and shown in markdown, shown
    assert f"{trace.autograd_grad:.12g}" in text and f"{trace.manual_grad:.12g}" in text
    for phrase in ("chain rule", "∂C/∂a_j = Σ_k δ_k · w_kj", "agree within", ": yes", "hidden layer",
                   "C = Σ (a − y)² / D", "(D = 4)", "update (SGD, η = 0.3)"):
        assert phrase in text, phrase
    assert "| n | k | δ\\_k | w\\_kj | δ\\_k · w\\_kj |" in markdown
    assert trace.to_text(digits=8).count(f"{trace.new:.8g}") == 1


def test_markdown_goes_into_tensorboard_text_and_reads_back(tmp_path):
    """``to_markdown()`` as a TensorBoard text summary, read back with TensorBoard's own reader."""
    from torch.utils.tensorboard import SummaryWriter

    from tb import read_events

    trace = mbp.explain(han_kamber(), [1.0, 0.0, 1.0], [1.0], loss="half_sse", weight="2.weight", index=(0, 0),
                        lr=0.9)
    with SummaryWriter(str(tmp_path)) as writer:
        writer.add_text("explain/w46", trace.to_markdown(), global_step=0)
    (event,) = read_events(tmp_path).Tensors("explain/w46/text_summary")
    assert event.tensor_proto.string_val[0].decode() == trace.to_markdown()


def test_many_samples_show_the_first_few_then_the_sum():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)).to(DT)
    trace = mbp.explain(model, torch.randn(9, 2, dtype=DT), torch.randn(9, 1, dtype=DT), weight="2.weight",
                        index=(0, 1))
    text = str(trace)
    assert "N = 9" in text and "the tables show samples 0 to 3" in text
    chain = text.split("chain rule")[1].split("check")[0]
    assert "\n  4 " not in chain and "\n  …" in chain and "\n  Σ" in chain
    assert len(trace.products) == 9  # the trace itself keeps every sample


def test_each_samples_product_is_its_share_of_the_gradient():
    """With N > 1, product n is ∂/∂w of sample n's own terms of C (the mean's 1/N included)."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 3)).to(DT)
    x, y = torch.randn(5, 3, dtype=DT), torch.randint(0, 3, (5,))
    trace = mbp.explain(model, x, y, loss="cross_entropy", weight="0.weight", index=(2, 1))
    for n in range(5):
        share = F.cross_entropy(model(x[n : n + 1]), y[n : n + 1], reduction="sum") / 5
        expected = torch.autograd.grad(share, model[0].weight)[0][2, 1]
        assert abs(trace.products[n].item() - expected.item()) < 1e-12


def test_cross_entropy_on_the_last_z_says_so():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3)).to(DT)
    x, y = torch.randn(4, 3, dtype=DT), torch.tensor([0, 2, 1, 2])
    trace = mbp.explain(model, x, y, loss="cross_entropy", weight="2.weight", index=(1, 3))
    assert "∂C/∂z = (softmax(z) − onehot(y))/N directly" in str(trace)
    assert trace.da_dz.tolist() == [1.0] * 4
    out = model(x).detach()
    expected = (torch.softmax(out, 1) - F.one_hot(y, 3)) / 4
    torch.testing.assert_close(trace.dC_da, expected[:, 1], rtol=1e-12, atol=1e-14)
    with_sigmoid = nn.Sequential(*model, nn.Sigmoid())
    assert "directly" not in str(mbp.explain(with_sigmoid, x, y, loss="cross_entropy", weight="2.weight",
                                             index=(1, 3)))


def test_loss_modules_and_names_give_the_same_trace():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2)).to(DT)
    x, y, classes = torch.randn(3, 2, dtype=DT), torch.randn(3, 2, dtype=DT), torch.tensor([1, 0, 1])
    pairs = [("mse", nn.MSELoss(), y), ("sse", nn.MSELoss(reduction="sum"), y),
             ("cross_entropy", nn.CrossEntropyLoss(), classes), ("cross_entropy", mbp.nn.CrossEntropyLoss(), classes)]
    for name, module, targets in pairs:
        by_name = mbp.explain(model, x, targets, loss=name, weight="0.weight", index=(2, 1))
        by_module = mbp.explain(model, x, targets, loss=module, weight="0.weight", index=(2, 1))
        assert by_name.grad == by_module.grad and by_name.loss == by_module.loss
    half = mbp.explain(model, x, y, loss="half_sse", weight="0.weight", index=(2, 1))
    full = mbp.explain(model, x, y, loss="sse", weight="0.weight", index=(2, 1))
    assert abs(2 * half.grad - full.grad) < 1e-14  # C = (a − y)² has the factor 2 that ½ cancels


def test_the_model_is_left_as_it_was():
    model = mbp.convert(nn.Sequential(nn.Linear(2, 2), nn.Sigmoid(), nn.Linear(2, 1)).to(DT))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mbp.explain(model, torch.randn(3, 2, dtype=DT), torch.randn(3, 1, dtype=DT), weight="0.bias", index=(1,))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert mbp.is_manual(model[0]) and all(p.grad is None for p in model.parameters())


def test_under_no_grad_too():
    model = nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 1)).to(DT)
    with torch.no_grad():
        trace = mbp.explain(model, [1.0, -1.0], [0.5], weight="0.weight", index=(1, 0))
    assert trace.agrees and trace.manual_grad != 0


def test_float32_agrees_within_its_precision():
    model = nn.Sequential(nn.Linear(4, 3), nn.GELU(), nn.Linear(3, 2), nn.Softplus())
    trace = mbp.explain(model, torch.randn(6, 4), torch.randn(6, 2), weight="0.weight", index=(0, 3))
    assert trace.agrees and trace.tolerance < 1e-3


def test_a_bare_linear_layer_and_activations_before_it():
    layer = nn.Linear(2, 2).to(DT)
    trace = mbp.explain(layer, [1.0, 2.0], [0.5, 0.1], weight="weight", index=(1, -1))
    assert trace.index == (1, 1) and "(root)" in str(trace) and trace.agrees
    first_tanh = nn.Sequential(nn.Tanh(), nn.Linear(2, 1)).to(DT)
    trace = mbp.explain(first_tanh, [[0.5, -1.0]], [[1.0]], weight="1.weight", index=(0, 1))
    assert trace.dz_dw.item() == pytest.approx(torch.tanh(torch.tensor(-1.0, dtype=DT)).item())
    assert trace.agrees


# -- bad input ---------------------------------------------------------------------------------------
def small():
    return nn.Sequential(nn.Linear(3, 2), nn.Sigmoid(), nn.Sequential(nn.Linear(2, 1), nn.Sigmoid())).to(DT)


PARAMETER_LIST = ["0.weight  (2, 3)", "0.bias    (2,)", "2.0.weight  (1, 2)", "2.0.bias    (1,)"]


@pytest.mark.parametrize(("weight", "index", "says"), [
    ("1.weight", (0, 0), "has no parameter '1.weight'"),
    ("2.weight", (0, 0), "has no parameter '2.weight'"),
    ("0.weight", (2, 0), "index (2, 0) does not exist in 0.weight of shape (2, 3)"),
    ("0.weight", (0,), "index (0,) does not exist in 0.weight of shape (2, 3)"),
    ("0.bias", (0, 1), "index (0, 1) does not exist in 0.bias of shape (2,)"),
    ("2.0.bias", 1, "index (1,) does not exist in 2.0.bias of shape (1,)"),
])
def test_a_weight_or_index_that_does_not_exist_lists_every_parameter(weight, index, says):
    with pytest.raises(ValueError) as err:
        mbp.explain(small(), [1.0, 0.0, 1.0], [1.0], weight=weight, index=index)
    message = str(err.value)
    assert says in message
    for row in PARAMETER_LIST:
        assert " ".join(row.split()) in " ".join(message.split()), row


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 1)

    def forward(self, x):
        return self.fc(x) * 2


class DoubledLinear(nn.Linear):
    def forward(self, x):
        return 2 * super().forward(x)


@pytest.mark.parametrize(("model", "says"), [
    (nn.Sequential(nn.Conv2d(1, 1, 1), nn.Linear(3, 1)), "layer '0' (Conv2d)"),
    (nn.Sequential(nn.Linear(3, 2), nn.Sequential(nn.Dropout(), nn.Linear(2, 1))), "layer '1.0' (Dropout)"),
    (nn.LSTM(3, 1), "layer (root) (LSTM)"),
    (mbp.convert(nn.Sequential(nn.Linear(3, 2), nn.LSTM(2, 1))), "layer '1' (LSTM)"),
    (nn.Sequential(nn.Linear(3, 3), nn.Softmax(dim=1), nn.Linear(3, 1)), "layer '1' (Softmax)"),
    (Custom(), "layer (root) (Custom, a module with a forward of its own)"),
    (nn.Sequential(DoubledLinear(3, 1)), "layer '0' (DoubledLinear, with a forward of its own)"),
    (nn.Sequential(nn.Tanh()), "Sequential holds no Linear layer"),
])
def test_a_layer_it_cannot_trace_is_named_with_what_is_supported(model, says):
    with pytest.raises(TypeError) as err:
        mbp.explain(model, [1.0, 0.0, 1.0], [1.0], weight="0.weight", index=(0, 0))
    assert says in str(err.value)
    assert "Linear, Identity, Sigmoid, Tanh, ReLU, LeakyReLU" in str(err.value)


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"loss": "hinge"}, "unknown loss 'hinge'; the loss is one of ('mse', 'sse', 'half_sse', 'cross_entropy')"),
    ({"loss": nn.MSELoss(reduction="none")}, "cannot trace the loss MSELoss(reduction='none')"),
    ({"loss": nn.L1Loss()}, "cannot trace the loss L1Loss(reduction='mean')"),
    ({"loss": nn.CrossEntropyLoss(label_smoothing=0.1), "targets": [0]}, "label smoothing"),
    ({"loss": "cross_entropy"}, "cross_entropy takes class indices, an integer tensor of shape (1,)"),
    ({"loss": "cross_entropy", "targets": [1]}, "class indices [1] outside [0, 1)"),
    ({"targets": [[1.0, 0.0]]}, "targets of shape (1, 2); the network's output has shape (1, 1)"),
    ({"inputs": [[1.0, 0.0]]}, "inputs of shape (1, 2); expected (N, 3)"),
])
def test_bad_loss_targets_or_inputs(kwargs, says):
    args = {"inputs": [1.0, 0.0, 1.0], "targets": [1.0], **kwargs}
    with pytest.raises(ValueError) as err:
        mbp.explain(small(), args.pop("inputs"), args.pop("targets"), weight="0.weight", index=(0, 0), **args)
    assert says in str(err.value)


def test_the_example_in_docs_teaching_prints_what_the_page_shows():
    """docs/teaching.md pastes explain()'s output for Han & Kamber's w14: it must stay what explain prints."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "teaching.md").read_text()
    section = page.split("## Every number for one weight", 1)[1]
    code = re.search(r"```python\n(.+?)```", section, re.S).group(1)
    shown = re.search(r"```text\n(.+?)```", section, re.S).group(1)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(code, {})
    assert printed.getvalue() == shown


def test_a_linear_used_twice_is_refused_by_name():
    shared = nn.Linear(2, 2).to(DT)
    with pytest.raises(TypeError, match=r"layer '2' \(Linear\) is the same module as layer '0'"):
        mbp.explain(nn.Sequential(shared, nn.Sigmoid(), shared), [[1.0, 2.0]], [[0.0, 1.0]], weight="0.weight",
                    index=(0, 0))


def test_agreement_is_relative_so_a_vanishing_gradient_is_still_checked():
    model = nn.Sequential(nn.Linear(2, 1), nn.Sigmoid()).to(DT)
    with torch.no_grad():
        model[0].weight.fill_(15.0)  # z ≈ 30, σ saturated: σ′ ≈ e^−30 ≈ 1e-13, a vanishing gradient
    trace = mbp.explain(model, [[1.0, 1.0]], [[0.0]], weight="0.weight", index=(0, 0))
    assert 0 < abs(trace.grad) < 1e-11 and trace.tolerance < 1e-18 and trace.agrees


def test_the_code_lines_docs_teaching_quotes_are_in_the_source():
    """docs/teaching.md leads from the formulas to the code: every commented line it quotes from the
    library (first section) must be a line of manual_backprop's source, as it is now."""
    root = Path(__file__).resolve().parents[1]
    page = (root / "docs" / "teaching.md").read_text()
    section = page.split("## From the formulas to the code", 1)[1].split("\n## ", 1)[0]
    quoted = [line.strip() for block in re.findall(r"```python\n(.+?)```", section, re.S)
              for line in block.splitlines() if "#" in line]
    source = {line.strip() for path in (root / "manual_backprop").rglob("*.py")
              for line in path.read_text().splitlines()}
    assert quoted and [line for line in quoted if line not in source] == []
