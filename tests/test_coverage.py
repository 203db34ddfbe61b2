"""coverage(): which backward nodes are hand-written, and which module left the native ones."""

import warnings
from collections import Counter

import pytest
import torch
from torch import nn

import manual_backprop as mbp
from manual_backprop.coverage import CoverageReport, coverage


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def converted(model: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the custom modules below keep native ops, as the tests intend
        return mbp.convert(model)


class ExpBlock(nn.Module):
    """A custom forward with ops that have no hand-written rule (atan, cumprod) around a convertible layer."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.atan(self.fc(x)).cumprod(-1)


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = ExpBlock()

    def forward(self, x):
        return self.block(torch.sinh(x))  # sinh is the encoder's own, made before the block runs


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = Encoder()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        h = self.encoder(x)
        return self.head(h), (h.cumprod(0), [h])


def x(requires_grad: bool = False) -> torch.Tensor:
    return torch.randn(5, 4, requires_grad=requires_grad)


def test_a_converted_mlp_is_fully_hand_written():
    report = coverage(mbp.convert(mlp()), x())
    assert report.ok and report.hand_written_share == 1.0
    assert report.hand_written == {"Linear": 2, "ReLU": 1}
    assert report.hand_written_by_module == {("Linear", "0"): 1, ("ReLU", "1"): 1, ("Linear", "2"): 1}
    assert report.native == []
    assert report.accumulate_grad == 4  # two weights, two biases: not compute nodes


def test_native_ops_of_a_custom_forward_name_its_module():
    report = coverage(converted(ExpBlock()), x())
    assert not report.ok
    assert report.native == [("AtanBackward0", "(root)", 1), ("CumprodBackward0", "(root)", 1)]
    assert report.hand_written_by_module == {("Linear", "fc"): 1}
    assert report.hand_written_share == pytest.approx(1 / 3)


def test_an_unconverted_model_lists_every_op():
    report = coverage(mlp(), x(requires_grad=True))
    assert report.hand_written_share == 0.0 and not report.ok
    assert report.native == [
        ("AddmmBackward0", "0", 1),
        ("TBackward0", "0", 1),
        ("ReluBackward0", "1", 1),
        ("AddmmBackward0", "2", 1),
        ("TBackward0", "2", 1),
    ]
    assert report.accumulate_grad == 5  # the input's too


def test_nested_paths_name_the_innermost_module_and_the_caller_of_what_it_made():
    report = coverage(converted(TwoHeads()), x(requires_grad=True))
    assert report.native == [
        ("CumprodBackward0", "(root)", 1),
        ("SinhBackward0", "encoder", 1),
        ("AtanBackward0", "encoder.block", 1),
        ("CumprodBackward0", "encoder.block", 1),
    ]
    assert report.hand_written_by_module == {("Linear", "encoder.block.fc"): 1, ("Linear", "head"): 1}


def test_a_tuple_output_is_backpropagated_from_every_floating_leaf():
    class WithIndex(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = mbp.convert(nn.Linear(4, 2))

        def forward(self, x):
            z = self.fc(x)
            return z, (z.argmax(1), torch.sigmoid(z))

    report = coverage(WithIndex(), x())
    assert report.hand_written_by_module == {("Linear", "fc"): 1}
    assert report.native == [("SigmoidBackward0", "(root)", 1)]


def test_history_of_the_inputs_is_outside():
    report = coverage(mbp.convert(mlp()), torch.exp(x(requires_grad=True)))
    assert report.native == [("ExpBackward0", "(outside)", 1)]


def test_keyword_inputs_are_passed_on():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = mbp.convert(nn.Linear(4, 2))

        def forward(self, x, *, scale):
            return self.fc(x) * scale

    report = coverage(Scaled(), x(), scale=torch.tensor(3.0, requires_grad=True))
    assert report.native == [("MulBackward0", "(root)", 1)]


def test_grads_and_hooks_are_as_before():
    model = mbp.convert(mlp())
    model[0].weight.grad = torch.ones_like(model[0].weight)
    before = model[0].weight.grad.clone()
    inputs = x(requires_grad=True)
    coverage(model, inputs)
    assert torch.equal(model[0].weight.grad, before)
    assert all(p.grad is None for name, p in model.named_parameters() if name != "0.weight")
    assert inputs.grad is None
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_hooks_are_removed_when_the_forward_fails():
    model = mbp.convert(mlp())
    with pytest.raises(mbp.LayerInputError):
        coverage(model, torch.randn(5, 7))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_tables():
    report = coverage(converted(TwoHeads()), x())
    text = str(report)
    assert text.splitlines()[0].split() == ["operation", "backward", "count", "module", "path(s)"]
    assert any(
        line.split() == ["Linear", "hand-written", "2", "encoder.block.fc,", "head"] for line in text.splitlines()
    )
    assert any(line.split() == ["AtanBackward0", "native", "1", "encoder.block"] for line in text.splitlines())
    assert "2 of 5 compute nodes hand-written (40%)" in text
    markdown = report.to_markdown()
    assert "| `Linear` | hand-written | 2 | `encoder.block.fc`, `head` |" in markdown
    assert "| `CumprodBackward0` | native | 2 | `(root)`, `encoder.block` |" in markdown
    assert "2 of 5 compute nodes hand-written (40%)" in markdown


def test_repeated_nodes_show_their_count_per_module():
    report = CoverageReport(Counter({("Linear", "fc"): 2}), Counter(), accumulate_grad=0)
    assert "| `Linear` | hand-written | 2 | `fc` ×2 |" in report.to_markdown()
    assert "2 of 2 compute nodes hand-written (100%)" in str(report)


def test_a_model_that_is_not_a_module_is_refused():
    with pytest.raises(TypeError, match=r"torch\.nn\.Module, got function"):
        coverage(lambda t: t * 2, x())


def test_an_output_without_graph_is_refused():
    with pytest.raises(ValueError, match="requires_grad=True"):
        coverage(nn.ReLU(), x())
    with torch.no_grad(), pytest.raises(ValueError, match="nothing in its forward requires grad"):
        coverage(mbp.convert(mlp()), x())
