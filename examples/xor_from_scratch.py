"""XOR from scratch: the classic 2-2-1 sigmoid network, trained by hand-written backprop in a plain loop.

    python examples/xor_from_scratch.py                # 2-2-1, 1,000 full-batch steps, about a second
    python examples/xor_from_scratch.py --hidden 3     # 2-3-1: reaches XOR from every seed we tried
    python examples/xor_from_scratch.py --seed 4       # a seed where 2-2-1 gets stuck (see below)

No single line separates XOR's ones {(0,1), (1,0)} from its zeros {(0,0), (1,1)}, so a network
without a hidden layer cannot learn it (Minsky & Papert, 1969). Two hidden sigmoid units can: one
learns to draw a line that cuts off (0,0) (≈ OR), the other one that cuts off (1,1) (≈ NAND), and
the output unit fires where both fire (≈ AND): XOR = AND(OR, NAND). Rumelhart, Hinton & Williams
(1986) showed backprop finding such a solution.

The network is an ordinary ``nn.Sequential`` of ``Linear`` and ``Sigmoid`` layers; one call to
``manual_backprop.convert`` swaps in the layers whose backward is the chain rule written out, and
the loop below is the textbook one: forward, the squared error C = mean((y − t)²), backward (the
delta rule, δ = ∂C/∂z, layer by layer), a gradient step with momentum on all four points at once.
The script prints the truth table before and after training, the logic function each unit has
learnt, and the final weights and biases, and says whether the network computes XOR.

A 2-2-1 network sometimes ends in a local minimum: one input pair stays at output ½ (here from
seeds 4, 5, 8, 9 of 0-9). More hidden units (``--hidden 3``) or another seed get past it.
"""

from __future__ import annotations

import argparse
import sys
from collections import OrderedDict

import torch
from torch import Tensor, nn

import manual_backprop

#: the four inputs and their XOR targets
X = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
T = torch.tensor([[0.0], [1.0], [1.0], [0.0]])

#: a two-input logic function by its truth table on (0,0), (0,1), (1,0), (1,1)
LOGIC = {
    (0, 0, 0, 0): "FALSE", (0, 0, 0, 1): "AND", (0, 0, 1, 0): "x1 AND NOT x2", (0, 0, 1, 1): "x1",
    (0, 1, 0, 0): "NOT x1 AND x2", (0, 1, 0, 1): "x2", (0, 1, 1, 0): "XOR", (0, 1, 1, 1): "OR",
    (1, 0, 0, 0): "NOR", (1, 0, 0, 1): "XNOR", (1, 0, 1, 0): "NOT x2", (1, 0, 1, 1): "x1 OR NOT x2",
    (1, 1, 0, 0): "NOT x1", (1, 1, 0, 1): "NOT x1 OR x2", (1, 1, 1, 0): "NAND", (1, 1, 1, 1): "TRUE",
}


def build_network(hidden: int) -> nn.Sequential:
    """2 → ``hidden`` sigmoid units → 1 sigmoid output, written the usual PyTorch way."""
    return nn.Sequential(OrderedDict(
        hidden=nn.Linear(2, hidden), sigmoid1=nn.Sigmoid(),
        output=nn.Linear(hidden, 1), sigmoid2=nn.Sigmoid(),
    ))


def logic_name(values: Tensor) -> str:
    """The logic function a unit computes, from its four activations thresholded at ½."""
    return LOGIC[tuple(int(v > 0.5) for v in values.tolist())]


def truth_table(network: nn.Sequential) -> str:
    """x1 x2 → target, the network's output y, and y rounded; one row per input."""
    with torch.no_grad():
        y = network(X).squeeze(1)
    rows = ["x1 x2 | XOR | output y | y > ½"]
    rows += [f" {int(x[0])}  {int(x[1])} |  {int(t)}  |  {v:.4f}  |   {int(v > 0.5)}"
             for x, t, v in zip(X, T.squeeze(1), y.tolist())]
    return "\n".join(rows)


def units(network: nn.Sequential) -> str:
    """What each hidden unit and the output unit compute, as logic functions of their inputs."""
    def values(a: Tensor) -> str:
        return " ".join(f"{v:.2f}" for v in a.tolist())

    with torch.no_grad():
        a_hidden = network[:2](X)  # the hidden activations σ(z) for the four inputs
        y = network(X).squeeze(1)
    names = [logic_name(a_hidden[:, j]) for j in range(a_hidden.shape[1])]
    lines = [f"hidden unit {j + 1}: {values(a_hidden[:, j])}  ≈ {name}" for j, name in enumerate(names)]
    lines.append(f"output unit  : {values(y)}  ≈ {logic_name(y)} of x1, x2")
    if len(names) == 2:  # the output unit as a function of the two hidden units, fed clean 0s and 1s
        with torch.no_grad():
            g = network[2:](X).squeeze(1)
        lines.append(f"output unit on hidden units (h1, h2) = (0,0) (0,1) (1,0) (1,1): {values(g)}  ≈ {logic_name(g)}, "
                     f"so y ≈ {logic_name(g)}({names[0]}, {names[1]})")
    return "\n".join(lines)


def weights(network: nn.Sequential) -> str:
    lines = []
    for name in ("hidden", "output"):
        layer = network.get_submodule(name)
        for j, (w, b) in enumerate(zip(layer.weight.tolist(), layer.bias.tolist()), start=1):
            lines.append(f"{name} unit {j}: w = [{', '.join(f'{v:+.2f}' for v in w)}], b = {b:+.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=2, help="hidden sigmoid units (default 2: the classic 2-2-1)")
    parser.add_argument("--steps", type=int, default=1000, help="full-batch gradient steps (default 1000)")
    parser.add_argument("--lr", type=float, default=2.0, help="learning rate η (default 2.0; momentum 0.9)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default 0)")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    network = build_network(args.hidden)
    print(f"2-{args.hidden}-1 sigmoid network, seed {args.seed}, before training:\n{truth_table(network)}\n")

    manual_backprop.convert(network, strict=True)  # every layer's backward is now the chain rule, by hand
    loss_fn = manual_backprop.nn.MSELoss()  # C = mean((y − t)²)
    optimizer = torch.optim.SGD(network.parameters(), lr=args.lr, momentum=0.9)
    for step in range(args.steps):
        loss = loss_fn(network(X), T)
        optimizer.zero_grad()
        if step == 0:  # once, show that nothing native computed a derivative
            audit = manual_backprop.audit_backward(loss)  # runs loss.backward()
            print(f"the first step's backward: {'every derivative hand-written' if audit.ok else audit}\n")
        else:
            loss.backward()
        optimizer.step()

    with torch.no_grad():
        final_loss = loss_fn(network(X), T).item()
        learned = bool(((network(X) > 0.5).float() == T).all())
    print(f"after {args.steps} steps (squared error {final_loss:.2e}):\n{truth_table(network)}\n")
    print(f"what the units compute (activations for (0,0) (0,1) (1,0) (1,1)):\n{units(network)}\n")
    print(f"final weights:\n{weights(network)}\n")
    if learned:
        print("learned XOR: yes, the network computes XOR on all four inputs")
    else:
        print("learned XOR: no, an output is on the wrong side of ½ (a local minimum leaves outputs at ½); "
              "try --hidden 3, another --seed or more --steps")
    return {"learned": learned, "loss": final_loss, "network": network}


if __name__ == "__main__":
    main(sys.argv[1:])
