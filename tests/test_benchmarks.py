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
