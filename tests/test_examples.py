"""The example scripts, run as a user runs them (a subprocess, small settings), and what they print and write."""

import csv
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_iris

from tb import read_events

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _run(script: str, *args: str, cwd: Path) -> str:
    """``python examples/<script> <args>`` in ``cwd`` on one thread (as the tests run); its stdout."""
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _load(script: str):
    """An example script as a module, to call its ``main(argv)`` in this process."""
    spec = importlib.util.spec_from_file_location(Path(script).stem, EXAMPLES / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _accuracy(out: str) -> float:
    return float(re.search(r"validation accuracy (\d+\.\d)%", out).group(1))


@pytest.mark.slow
def test_train_digits(tmp_path):
    out = _run("train_digits.py", "--small", cwd=tmp_path)
    assert "trained 30 steps with manual backprop" in out
    assert _accuracy(out) > 60.0  # 30 steps of SGD: about 77 %; chance is 10 %
    assert "tensorboard --logdir runs/train_digits" in out
    tags = read_events(tmp_path / "runs" / "train_digits" / "version_0").Tags()
    assert {"error_terms/fc1", "error_terms/fc2"} <= set(tags["histograms"])
    assert {"error_terms_rms/fc1", "train_loss", "val_acc"} <= set(tags["scalars"])


def _truth_tables(out: str) -> list[list[tuple[int, int, int, float, int]]]:
    """The printed truth tables: per table, rows (x1, x2, XOR, output y, y > ½)."""
    tables = []
    for block in re.split(r"x1 x2 \| XOR \| output y \| y > ½\n", out)[1:]:
        rows = re.findall(r"^ (\d)  (\d) \|  (\d)  \|  (\d\.\d+)  \|   (\d)$", block, flags=re.MULTILINE)[:4]
        tables.append([(int(a), int(b), int(t), float(y), int(r)) for a, b, t, y, r in rows])
    return tables


@pytest.mark.slow
def test_xor_from_scratch_learns_xor(tmp_path):
    out = _run("xor_from_scratch.py", cwd=tmp_path)
    before, after = _truth_tables(out)
    assert [(x1, x2, t) for x1, x2, t, _, _ in after] == [(0, 0, 0), (0, 1, 1), (1, 0, 1), (1, 1, 0)]
    assert any(r != t for _, _, t, _, r in before)  # the untrained network is not XOR
    assert all(r == t == (x1 ^ x2) for x1, x2, t, _, r in after)
    assert all(abs(y - t) < 0.1 for _, _, t, y, _ in after)
    assert "the first step's backward: every derivative hand-written" in out
    assert "learned XOR: yes" in out
    # the classic decomposition: two hidden units, and the output unit combining them
    assert re.search(r"output unit  : .*≈ XOR of x1, x2", out)
    assert re.search(r"so y ≈ \w+\(.+, .+\)", out)
    assert len(re.findall(r"^hidden unit \d: w = \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\], b = [+-]\d+\.\d\d$", out,
                          flags=re.MULTILINE)) == 2


@pytest.mark.slow
def test_xor_from_scratch_says_when_it_is_stuck(capsys):
    """From seed 4 the 2-2-1 network ends in the local minimum where outputs stay at ½; the script says so,
    and three hidden units get past it."""
    xor = _load("xor_from_scratch.py")
    result = xor.main(["--seed", "4"])
    assert result["learned"] is False
    assert "learned XOR: no" in capsys.readouterr().out
    y = result["network"](xor.X).detach().squeeze(1)
    assert (y - 0.5).abs().min() < 0.01
    assert xor.main(["--seed", "4", "--hidden", "3"])["learned"]


@pytest.mark.slow
def test_swap_into_your_model(tmp_path):
    out = _run("swap_into_your_model.py", "--small", cwd=tmp_path)
    before, after = out.split("after manual_backprop.convert(model, strict=True):")
    assert "0 of 9 compute nodes hand-written (0%)" in before and "ConvolutionBackward0" in before
    assert "8 of 8 compute nodes hand-written (100%)" in after and "native" not in after.split("\n\n")[0]
    assert "trained SmallCNN 30 steps with manual backprop" in out
    assert _accuracy(out) > 50.0  # 30 Adam steps: about 74 %
    assert "tensorboard --logdir runs/swap_into_your_model" in out
    events = read_events(tmp_path / "runs" / "swap_into_your_model" / "version_0")
    tags = events.Tags()
    assert {"error_terms/conv1", "error_terms/conv2", "error_terms/fc"} <= set(tags["histograms"])
    for layer in ("conv1", "conv2", "fc"):  # the hand-written gradients agree with native autograd
        assert all(s.value < 1e-4 for s in events.Scalars(f"parity/{layer}"))


@pytest.mark.slow
def test_your_own_csv(tmp_path):
    out = _run("your_own_csv.py", "--small", cwd=tmp_path)
    assert "iris.csv: 150 rows" in out and "classes ['setosa', 'versicolor', 'virginica']" in out
    assert "trained 20 steps" in out
    assert _accuracy(out) > 60.0  # 20 Adam steps: about 83 %; chance is 33 %
    assert len(re.findall(r"predicted '\w+' +true '\w+'", out)) == 5
    assert "tensorboard --logdir runs/your_own_csv" in out
    assert "error_terms/fc1" in read_events(tmp_path / "runs" / "your_own_csv" / "version_0").Tags()["histograms"]


def test_your_own_csv_regression(tmp_path, monkeypatch, capsys):
    """A table of the user's own, a regression target: y = 2·a − b, learnt and reported as a mean absolute error."""
    rng = np.random.default_rng(0)
    a, b = rng.uniform(-1, 1, 80), rng.uniform(-1, 1, 80)
    with (tmp_path / "table.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["a", "b", "unused", "y"])
        writer.writerows(zip(a, b, ["x"] * 80, 2 * a - b))
    monkeypatch.chdir(tmp_path)
    result = _load("your_own_csv.py").main(["--csv", "table.csv", "--target", "y", "--features", "a", "b",
                                            "--task", "regression", "--epochs", "20", "--lr", "0.03"])
    out = capsys.readouterr().out
    assert "features ['a', 'b'], target 'y' (regression)" in out
    assert "validation mean absolute error" in out
    assert result["metric"] < 0.2  # y spans about ±3


def test_shipped_iris_csv_is_scikit_learns():
    """examples/data/iris.csv is the Iris data as scikit-learn ships it, species by name."""
    iris = load_iris()
    with (EXAMPLES / "data" / "iris.csv").open(newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["sepal_length", "sepal_width", "petal_length", "petal_width", "species"]
    np.testing.assert_array_equal(np.array([[float(v) for v in row[:4]] for row in rows[1:]]), iris.data)
    assert [row[4] for row in rows[1:]] == [iris.target_names[t] for t in iris.target]
