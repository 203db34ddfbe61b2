"""The backward graph as a tree of hand-written Functions (``manual-backprop graph``)."""

import re
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import manual_backprop as mbp
from lightning_modules import MLP, SigmoidMLP
from lightning_modules.teaching_cli import main
from manual_backprop.functional.attention import Chunk
from manual_backprop.functional.linear import Linear
from manual_backprop.graph import BackwardTree, GraphNode, backward_tree, formula_of, model_backward_tree


def small_mlp_tree() -> BackwardTree:
    model = mbp.convert(SigmoidMLP([4, 3, 2]))
    return model_backward_tree(model, torch.rand(5, 4), loss_fn=mbp.nn.CrossEntropyLoss(),
                               target=torch.tensor([0, 1, 0, 1, 1]))


def test_the_tree_of_a_small_mlp():
    tree = small_mlp_tree()
    assert [(n.name, n.kind, n.where) for n in tree.nodes] == [
        ("ClassIndexCrossEntropyBackward", "hand-written", "loss"),
        ("LinearBackward", "hand-written", "fc2"),
        ("SigmoidBackward", "hand-written", "sigmoid1"),
        ("LinearBackward", "hand-written", "fc1"),
        ("AccumulateGrad", "leaf", "fc1.weight"),
        ("AccumulateGrad", "leaf", "fc1.bias"),
        ("AccumulateGrad", "leaf", "fc2.weight"),
        ("AccumulateGrad", "leaf", "fc2.bias"),
    ]
    assert [n.children for n in tree.nodes] == [[1], [2, 6, 7], [3], [4, 5], [], [], [], []]
    linear, sigmoid, loss = tree.nodes[1].formula, tree.nodes[2].formula, tree.nodes[0].formula
    assert linear[1:] == ["∂C/∂a_prev = δ · W", "∂C/∂W = δᵀ · a_prev", "∂C/∂b = Σ_n δ"]
    assert linear[0].startswith("z = a_prev · Wᵀ + b")
    assert "σ′(z) = a(1 − a)" in sigmoid[0] and sigmoid[1] == "δ = ∂C/∂z = ∂C/∂a ⊙ f′(z)"
    assert loss[1].startswith("∂C/∂z = (softmax(z) − onehot(y)) / N")
    assert tree.nodes[4].shape == (3, 4) and not tree.native


def test_the_text_tree_reads_top_down():
    text = str(small_mlp_tree())
    assert text.startswith("backward graph of the loss: 4 hand-written Function node(s), 0 native, 4 leaf node(s)")
    nodes = [line for line in text.splitlines() if re.search(r"\(#\d+\)", line)]
    assert nodes[0].startswith("ClassIndexCrossEntropyBackward (#0)  ·  loss  ·  hand-written (ClassIndexCrossEntropy)")
    assert nodes[1] == "└── LinearBackward (#1)  ·  fc2  ·  hand-written (Linear)"
    assert nodes[2] == "    ├── SigmoidBackward (#2)  ·  sigmoid1  ·  hand-written (Sigmoid)"
    assert nodes[4].endswith("AccumulateGrad (#4)  ·  parameter fc1.weight (3, 4): ∂C/∂(fc1.weight) is added "
                             "into its .grad")
    assert "    │     ∂C/∂W = δᵀ · a_prev" in text  # the formula under its node, inside the tree's lines


def test_a_native_op_shows_as_native():
    class Squash(nn.Module):
        def forward(self, x):
            return torch.atan(x)  # no hand-written rule: stays on PyTorch's autograd

    model = nn.Sequential(nn.Linear(3, 2), Squash())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mbp.convert(model)
        tree = model_backward_tree(model, torch.rand(2, 3), loss_fn=mbp.nn.MSELoss(), target=torch.zeros(2, 2))
    native = tree.native
    assert [(n.name, n.where, n.formula) for n in native] == [("AtanBackward0", "1", [])]
    text = str(tree)
    assert "AtanBackward0 (#1)  ·  1  ·  native: PyTorch's own derivative, not hand-written" in text
    assert "1 native" in text.splitlines()[0]
    assert '"#f4cccc"' in tree.to_dot()  # drawn in red


def test_a_function_without_a_formula_says_so():
    assert formula_of(Chunk) == []  # its docstring states no derivative: nothing is made up
    tree = BackwardTree([GraphNode("ChunkBackward", "hand-written", function="Chunk")])
    assert "(no formula stated in its docstring)" in str(tree)
    assert formula_of(Linear)[1] == "∂C/∂a_prev = δ · W"


def test_backward_tree_of_a_loss_names_parameters_and_their_layers():
    model = mbp.convert(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)))
    x = torch.rand(2, 3)
    with mbp.layer_by_layer():
        loss = mbp.functional.mse_loss(model(x), torch.zeros(2, 1))
    tree = backward_tree(loss, model)
    assert [(n.name, n.where) for n in tree.nodes] == [
        ("MSELossBackward", None), ("LinearBackward", "2"), ("TanhBackward", None), ("LinearBackward", "0"),
        ("AccumulateGrad", "0.weight"), ("AccumulateGrad", "0.bias"), ("AccumulateGrad", "2.weight"),
        ("AccumulateGrad", "2.bias")]
    loss.backward()  # the graph was only read
    assert model[0].weight.grad is not None


def test_outside_layer_by_layer_the_linear_layers_and_their_activations_are_one_node():
    model = mbp.convert(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)))
    loss = mbp.functional.mse_loss(model(torch.rand(2, 3)), torch.zeros(2, 1))
    tree = backward_tree(loss, model)
    assert [n.name for n in tree.nodes][:2] == ["MSELossBackward", "LinearChainBackward"]
    assert "δ_{l−1} = (δ_l · W_l) ⊙ f_{l−1}′(z_{l−1})" in str(tree)  # the docstring's rule, under the node


def test_a_shared_node_is_drawn_once():
    layer = mbp.convert(nn.Linear(2, 2))
    h = layer(torch.rand(1, 2))
    loss = mbp.functional.mse_loss(layer(h), torch.zeros(1, 2))  # the same weights used twice
    tree = backward_tree(loss, layer)
    text = str(tree)
    assert text.count("parameter weight (2, 2)") == 1 and "drawn above" in text
    assert sum(n.name == "AccumulateGrad" for n in tree.nodes) == 2


def test_bad_input():
    with pytest.raises(ValueError, match="has no backward graph"):
        backward_tree(torch.ones(()))
    with pytest.raises(TypeError, match="expects the loss tensor"):
        backward_tree(1.0)
    with pytest.raises(ValueError, match="give loss_fn"):
        model_backward_tree(mbp.convert(nn.Linear(2, 3)), torch.rand(1, 2))


@settings(max_examples=15, deadline=None)
@given(sizes=st.lists(st.integers(1, 5), min_size=2, max_size=5),
       activation=st.sampled_from(["sigmoid", "tanh", "relu"]))
def test_random_mlps_give_one_node_per_layer(sizes, activation):
    model = mbp.convert(MLP(sizes, activation=activation))
    tree = model_backward_tree(model, torch.rand(3, sizes[0]), loss_fn=mbp.nn.MSELoss(),
                               target=torch.zeros(3, sizes[-1]))
    names = [n.name for n in tree.nodes if n.kind == "hand-written"]
    layers = len(sizes) - 1
    assert names.count("LinearBackward") == layers and len(names) == 1 + layers + (layers - 1)
    assert sorted(n.where for n in tree.nodes if n.kind == "leaf") == sorted(n for n, _ in model.named_parameters())
    assert all(n.formula for n in tree.nodes if n.kind == "hand-written")
    assert_dot_is_well_formed(tree.to_dot())


# -- the command line ----------------------------------------------------------------------------------
def assert_dot_is_well_formed(dot: str) -> None:
    assert dot.startswith("digraph")
    assert dot.count("{") == dot.count("}") and dot.rstrip().endswith("}")
    declared = set(re.findall(r"^\s*(n\d+) \[label=", dot, re.MULTILINE))
    edges = re.findall(r"^\s*(n\d+) -> (n\d+);", dot, re.MULTILINE)
    assert edges and all(a in declared and b in declared for a, b in edges)
    labels = re.findall(r'label="((?:[^"\\]|\\.)*)"', dot)
    assert len(labels) == len(declared)  # every quote inside a label is escaped


def test_graph_default_model(capsys):
    main(["graph"])
    out = capsys.readouterr().out
    assert out.startswith("network: lightning_modules.SigmoidMLP(), converted; input shape (1, 64); loss cross_entropy")
    assert "fc1.weight (32, 64)" in out and "0 native" in out
    assert out.count("LinearBackward") == 2 and "∂C/∂W = δᵀ · a_prev" in out


def test_graph_dot(capsys):
    main(["graph", "--dot"])
    dot = capsys.readouterr().out
    assert_dot_is_well_formed(dot)
    assert dot.count(" -> ") == 7 and "LinearBackward" in dot


def test_graph_of_any_network(capsys):
    main(["graph", "--network", "lightning_modules.MLP", "--init_args", '{"sizes": [5, 3, 2], "activation": "relu"}',
          "--loss", "mse", "--input_shape", "2,5"])
    out = capsys.readouterr().out
    assert "input shape (2, 5)" in out and "ReLUBackward" in out and "MSELossBackward" in out


def test_graph_from_a_fit_config(tmp_path, capsys):
    config = {"model": {"network": {"class_path": "lightning_modules.MLP",
                                    "init_args": {"sizes": [6, 4, 3], "activation": "tanh"}},
                        "loss": "cross_entropy"},
              "data": {"class_path": "lightning_modules.DigitsDataModule", "init_args": {"batch_size": 32}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    main(["graph", "-c", str(tmp_path / "config.yaml")])
    out = capsys.readouterr().out
    assert "network: lightning_modules.MLP(" in out and "sizes=[6, 4, 3]" in out and "activation='tanh'" in out
    assert "TanhBackward" in out
    assert "input shape (1, 6)" in out


@pytest.mark.parametrize(("args", "expected"), [
    (["--network", "NoSuchNet"], "cannot import 'NoSuchNet'; give the import path of a class: the project's models "
                                 "lightning_modules.MLP, lightning_modules.SigmoidMLP"),
    (["--init_args", "{sizes: 3}"], "--init_args is not valid JSON"),
    (["--init_args", '{"width": 3}'], "SigmoidMLP(**{'width': 3}) failed"),
    (["--loss", "hinge"], "unknown loss 'hinge'; choose one of bce, bce_with_logits, cross_entropy"),
    (["--input_shape", "1,x"], "--input_shape must be positive whole numbers"),
    (["--input_shape", "1,7"], "the forward or the loss failed on an input of shape (1, 7)"),
    (["-c", "missing.yaml"], "config 'missing.yaml': no such file"),
])
def test_graph_bad_input_says_what_is_wrong(args, expected, capsys):
    with pytest.raises(SystemExit) as done:
        main(["graph", *args])
    assert done.value.code == 2
    assert expected in " ".join(capsys.readouterr().err.split())


def test_graph_reads_what_fit_print_config_prints(tmp_path, capsys):
    from lightning_modules.cli import main as cli_main

    with pytest.raises(SystemExit):
        cli_main(["fit", "--print_config", "--model.network=lightning_modules.MLP",
                  "--model.network.sizes=[64, 5, 10]", "--model.network.activation=relu"])
    (tmp_path / "config.yaml").write_text(capsys.readouterr().out)
    main(["graph", "-c", str(tmp_path / "config.yaml")])
    out = capsys.readouterr().out
    assert "sizes=[64, 5, 10]" in out and "ReLUBackward" in out and "fc1.weight (5, 64)" in out


CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_graph_of_every_shipped_config(config, capsys):
    main(["graph", "-c", str(config)])
    first_lines = capsys.readouterr().out.splitlines()[:2]
    assert ", 0 native," in first_lines[1], first_lines
