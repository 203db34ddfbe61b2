"""Every ``configs/*.yaml``: ``manual-backprop fit -c <file>`` runs, ``--print_config`` round-trips, and the
result its header documents is reached (slow)."""

import re
import shutil
from pathlib import Path

import pytest
import yaml

from lightning_modules.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
FAST = ["--trainer.max_steps=3", "--trainer.enable_progress_bar=false", "--error_terms.every_n_steps=1",
        "--gradient_parity.every_n_steps=1"]


def _header(config: Path) -> str:
    """The comment block at the top of a config file, without the ``#``."""
    lines = []
    for line in config.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return "\n".join(lines)


def _expected_accuracy(config: Path) -> float:
    """The validation accuracy the header promises: ``Expect: validation accuracy ≈ 97 %``."""
    match = re.search(r"Expect: validation accuracy ≈ (\d+(?:\.\d+)?) %", _header(config))
    assert match, f"{config.name}: the header has no 'Expect: validation accuracy ≈ N %' line"
    return float(match.group(1))


def _printed_config(capsys, *args: str) -> dict:
    """``manual-backprop fit <args> --print_config``, parsed; it exits with 0."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["fit", *args, "--print_config"])
    assert done.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


def _assert_contains(whole, part, where: str = "") -> None:
    """Every value that ``part`` (a config file) sets is in ``whole`` (the full config), the same."""
    if isinstance(part, dict):
        assert isinstance(whole, dict), f"{where}: {whole!r} is not a mapping"
        for key, value in part.items():
            assert key in whole, f"{where}.{key} is not in the printed config"
            _assert_contains(whole[key], value, f"{where}.{key}")
    else:
        assert whole == part, f"{where}: the printed config has {whole!r}, the file {part!r}"


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """A working directory with the shipped example data at the relative path the configs use."""
    shutil.copytree(ROOT / "examples" / "data", tmp_path / "examples" / "data")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_there_are_configs():
    assert {"digits", "xor", "two_spirals", "your_own_csv"} <= {config.stem for config in CONFIGS}


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_header_says_what_it_trains_how_to_run_it_and_what_to_expect(config):
    header = _header(config)
    assert len(header.splitlines()) >= 3, f"{config.name}: no comment header"
    assert f"manual-backprop fit -c configs/{config.name}" in header
    assert 0 < _expected_accuracy(config) <= 100


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_runs_and_print_config_round_trips(config, in_tmp, capsys):
    """Print the config (the file plus fast settings), save it, fit from the printed file: the run's
    saved config.yaml equals what was printed, and holds every value the file sets."""
    file_values = yaml.safe_load(config.read_text())
    _assert_contains(_printed_config(capsys, "-c", str(config)), file_values, config.stem)

    printed = _printed_config(capsys, "-c", str(config), *FAST)
    (in_tmp / "printed.yaml").write_text(yaml.safe_dump(printed))
    main(["fit", "-c", "printed.yaml"])
    out = capsys.readouterr().out
    assert re.search(r"validation accuracy: \d+\.\d%", out)
    assert "tensorboard --logdir lightning_logs" in out
    saved = yaml.safe_load((in_tmp / "lightning_logs" / "version_0" / "config.yaml").read_text())
    assert saved == printed


def test_digits_config_is_the_default_run(capsys):
    """configs/digits.yaml spells out ``manual-backprop fit`` with no arguments, whose result
    tests/test_cli.py checks on the console script."""
    assert _printed_config(capsys, "-c", str(ROOT / "configs" / "digits.yaml")) == _printed_config(capsys)


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_reaches_its_documented_result(config, in_tmp, capsys):
    """The config's own settings (no progress bar, that is all) reach the accuracy its header
    documents, within 2 points."""
    main(["fit", "-c", str(config), "--trainer.enable_progress_bar=false"])
    accuracy = float(re.search(r"validation accuracy: (\d+\.\d)%", capsys.readouterr().out).group(1))
    assert accuracy >= _expected_accuracy(config) - 2.0
