"""examples/vanishing_gradients.py: δ vanishes through deep sigmoid layers, not through ReLU layers with He init."""

import importlib.util
from itertools import pairwise
from pathlib import Path

import pytest
import torch

from lightning_modules import DigitsDataModule

from tb import read_events

SCRIPT = Path(__file__).parent.parent / "examples" / "vanishing_gradients.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("vanishing_gradients", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def batch():
    x, y = DigitsDataModule().examples()
    return x[:256], y[:256]


def fall(rms: dict[str, float]) -> float:
    """How many times smaller δ's RMS is at the first layer than at the last."""
    values = list(rms.values())
    return values[-1] / values[0]


@pytest.mark.parametrize("seed", [0, 1])
def test_at_initialisation_sigmoid_vanishes_and_relu_does_not(script, batch, seed):
    sigmoid = script.delta_rms(script.build_network("sigmoid", "xavier", seed=seed), *batch)
    relu = script.delta_rms(script.build_network("relu", "he", seed=seed), *batch)
    assert list(sigmoid) == [f"fc{i}" for i in range(1, 10)]  # 8 hidden layers and the output layer
    assert fall(sigmoid) >= 10  # in fact ~10⁵: about ¼ per sigmoid layer
    assert fall(relu) < 10  # about 1 per ReLU layer with He init
    rms = list(sigmoid.values())
    assert all(a < b for a, b in pairwise(rms))  # shrinking layer by layer on the way back


def test_pytorch_default_init_shrinks_relu_too(script, batch):
    """The docstring's claim: with Var(w) = 1/(3·fan_in), each ReLU layer multiplies δ by about 1/√6."""
    relu = list(script.delta_rms(script.build_network("relu", "default"), *batch).values())
    per_layer = (relu[0] / relu[-2]) ** (1 / (len(relu) - 2))  # through the 7 hidden-to-hidden layers
    assert fall(dict(enumerate(relu))) >= 10
    assert 0.3 < per_layer < 0.55  # 1/√6 ≈ 0.41


def test_delta_rms_leaves_no_gradients(script, batch):
    network = script.build_network("relu", "he", depth=2, width=4)
    script.delta_rms(network, *batch)
    assert all(p.grad is None for p in network.parameters())
    with pytest.raises(ValueError, match="unknown init"):
        script.build_network("relu", "lecun")


def test_small_run_logs_both_runs(script, tmp_path, capsys):
    results = script.main(["--small", "--logdir", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert "δ RMS per layer at initialisation" in out and "δ RMS per layer after training" in out
    assert f"tensorboard --logdir {tmp_path / 'runs'}" in out
    for run in ("sigmoid", "relu"):
        tags = read_events(tmp_path / "runs" / run).Tags()["scalars"]
        assert {f"error_terms_rms/fc{i}" for i in range(1, 10)} <= set(tags), run
    assert fall(results["after"]["sigmoid (Glorot)"]) >= 10 and fall(results["after"]["relu (He)"]) < 10
    assert torch.isfinite(torch.tensor(list(results["after"]["relu (He)"].values()))).all()
