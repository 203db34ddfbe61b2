"""The benchmark scripts run (a smoke test: they are measurements, so nothing here is timed)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # each starts a Python that imports torch and Lightning


def test_recording_cost_runs_quick_and_prints_its_docs_section():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "recording_cost.py"), "--quick"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| fit loop (training + validation epochs), wall clock |" in done.stdout
    assert "| fit loop, this process's CPU time (all its threads) |" in done.stdout
    assert "| training batches only, wall clock |" in done.stdout
    assert "A run is 20 training steps" in done.stdout


@pytest.mark.parametrize(("flag", "message"), [("--quick", "--quick is a smoke run, not a measurement"),
                                              ("--control", "--control measures the method, not the logger")])
def test_recording_cost_writes_the_docs_only_from_a_measurement_of_the_logger(flag, message):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "recording_cost.py"), flag, "--write-docs"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode != 0
    assert message in done.stderr


TRAINING_STEP_MODELS = ["mlp", "sigmoid_mlp", "cnn", "lstm_tagger", "transformer", "large_mlp"]


def _training_step(*flags: str, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "training_step.py"), *flags],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _table_rows(stdout: str) -> dict[str, list[str]]:
    """model name → the cells of its row in the printed table."""
    rows = {}
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in TRAINING_STEP_MODELS:
            rows[cells[0]] = cells
    return rows


def test_training_step_runs_quick_for_every_model_and_prints_its_table():
    done = _training_step("--quick", "--device", "cpu", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| model | device | step time manual ÷ native, median (p10–p90) |" in done.stdout
    rows = _table_rows(done.stdout)
    assert list(rows) == TRAINING_STEP_MODELS
    for cells in rows.values():
        assert cells[1] == "cpu"
        assert len(cells) == 6  # no compiled columns without --compile
        assert "(" in cells[2] and "–" in cells[2]  # the median with its spread
    assert "of that) and a manual step" in done.stdout  # large_mlp's share of the matrix-multiply throughput
    assert "Machine: " in done.stdout and "Versions: Python" in done.stdout


def test_training_step_compiles_one_small_model_quick():
    done = _training_step("--quick", "--compile", "--device", "cpu", "--models", "sigmoid_mlp", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (cells,) = _table_rows(done.stdout).values()
    assert len(cells) == 8
    assert not cells[6].startswith("failed"), cells[6]
    assert "graph break(s) manual" in done.stdout


def test_training_step_writes_the_docs_only_from_a_measurement():
    done = _training_step("--quick", "--write-docs", timeout=120)
    assert done.returncode != 0
    assert "--quick is a smoke run, not a measurement" in done.stderr
