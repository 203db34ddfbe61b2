"""The worked example of Han & Kamber, *Data Mining: Concepts and Techniques* (backpropagation,
Figure 9.5 and Tables 9.1–9.3): a 3-2-1 sigmoid network, x = (1, 0, 1), target 1, learning rate
0.9, one step. The book's numbers, reproduced to the book's precision by manual backprop.

The book writes Err_j for the error of unit j, with C = ½(T − O)², so Err_j = −δ_j = −∂C/∂z_j,
and updates w_ij += η · Err_j · O_i, which is SGD: w_ij −= η · ∂C/∂w_ij.

The book rounds every intermediate value to three decimals (O6 = 0.474), so the exact Err6 is
0.13117 where the book prints 0.1311: error terms agree within one unit of the book's fourth
decimal, updated weights exactly at its three.
"""

import pytest
import torch
from torch import nn

import manual_backprop as mbp

from cases import DT

BOOK_ERRORS = {"Err6": 0.1311, "Err5": -0.0065, "Err4": -0.0087}
BOOK_UPDATED = {
    "w46": -0.261, "w56": -0.138, "w14": 0.192, "w15": -0.306, "w24": 0.4, "w25": 0.1,
    "w34": -0.508, "w35": 0.194, "θ6": 0.218, "θ5": 0.194, "θ4": -0.408,
}


@pytest.fixture
def step():
    """One SGD step on the book's network; returns (error terms, updated weights and biases)."""
    net = mbp.convert(nn.Sequential(nn.Linear(3, 2), nn.Sigmoid(), nn.Linear(2, 1), nn.Sigmoid()).to(DT))
    with torch.no_grad():
        #                         x1    x2    x3
        net[0].weight.copy_(torch.tensor([[0.2, 0.4, -0.5],    # unit 4: w14, w24, w34
                                          [-0.3, 0.1, 0.2]]))  # unit 5: w15, w25, w35
        net[0].bias.copy_(torch.tensor([-0.4, 0.2]))           # θ4, θ5
        net[2].weight.copy_(torch.tensor([[-0.3, -0.2]]))      # w46, w56
        net[2].bias.copy_(torch.tensor([0.1]))                 # θ6
    optimizer = torch.optim.SGD(net.parameters(), lr=0.9)
    x, target = torch.tensor([[1.0, 0.0, 1.0]], dtype=DT), torch.tensor([[1.0]], dtype=DT)

    with mbp.record_error_terms(net, layers=["0", "2"]) as rec:
        out = net(x)
        half_squared_error = mbp.functional.mse_loss(out, target, reduction="sum") / 2  # C = ½(T − O)²
        half_squared_error.backward()
    optimizer.step()
    errors = {"Err6": -rec["2"][0, 0].item(), "Err4": -rec["0"][0, 0].item(), "Err5": -rec["0"][0, 1].item()}
    w_hidden, b_hidden, w_out, b_out = (p.detach() for p in net.parameters())
    updated = {
        "w14": w_hidden[0, 0], "w24": w_hidden[0, 1], "w34": w_hidden[0, 2],
        "w15": w_hidden[1, 0], "w25": w_hidden[1, 1], "w35": w_hidden[1, 2],
        "θ4": b_hidden[0], "θ5": b_hidden[1], "w46": w_out[0, 0], "w56": w_out[0, 1], "θ6": b_out[0],
    }
    return errors, {k: v.item() for k, v in updated.items()}


def test_error_terms_match_the_book(step):
    errors, _ = step
    for name, book in BOOK_ERRORS.items():
        assert abs(errors[name] - book) < 1e-4, (name, errors[name])  # 4 decimals, as printed


def test_updated_weights_and_biases_match_the_book(step):
    _, updated = step
    for name, book in BOOK_UPDATED.items():
        assert round(updated[name], 3) == book, (name, updated[name])  # 3 decimals, as printed
