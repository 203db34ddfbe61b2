"""The README's promises that a test can hold it to."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _quick_start_commands():
    quick_start = ROOT.joinpath("README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", quick_start)


def test_quick_start_has_two_commands_and_ci_runs_the_test_one():
    commands = _quick_start_commands()
    assert len(commands) == 2
    assert "manual-backprop fit" in commands[0]
    ci_lines = ROOT.joinpath(".ci/run").read_text().splitlines()
    assert commands[1] in ci_lines


def test_quick_tour_example_runs_and_passes_its_audit():
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "quick_tour.py")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "verdict: every derivative came from manual_backprop's hand-written backward" in done.stdout
    assert "δ at layer 0 (Linear output): shape (8, 3)" in done.stdout


def test_ruff_is_clean():
    ruff = Path(sys.executable).parent / "ruff"
    if not ruff.exists():
        pytest.skip("ruff is in the dev extra")
    done = subprocess.run([str(ruff), "check", str(ROOT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
