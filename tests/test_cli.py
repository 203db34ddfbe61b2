"""The ``manual-backprop`` command line."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lightning_modules.cli import main

from tb import read_events

FAST = ["--trainer.max_steps=3", "--trainer.enable_progress_bar=false", "--error_terms.every_n_steps=1",
        "--gradient_parity.every_n_steps=1"]


def test_fit_prints_accuracy_and_the_tensorboard_command(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", *FAST, "--trainer.default_root_dir=runs"])
    out = capsys.readouterr().out
    assert re.search(r"validation accuracy: \d+\.\d%", out)
    assert "tensorboard --logdir runs/lightning_logs" in out
    run = tmp_path / "runs" / "lightning_logs" / "version_0"
    tags = read_events(run).Tags()
    assert "error_terms/fc1" in tags["histograms"]
    assert {"error_terms_rms/fc1", "error_terms_ratio/fc1", "update_ratio/fc1.weight", "parity/fc1"} <= set(
        tags["scalars"])
    assert tags["images"] == ["error_terms_heatmap"] and tags["tensors"] == ["custom_scalars__config__"]


def test_callback_flags_reach_the_callbacks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", *FAST, "--error_terms.heatmap=false", "--error_terms.layers=[fc2]",
          "--gradient_parity.every_n_steps=2", "--gradient_parity.tolerance=0.5"])
    tags = read_events(tmp_path / "lightning_logs" / "version_0").Tags()
    assert tags["images"] == [] and tags["histograms"] == ["error_terms/fc2"]
    config = yaml.safe_load((tmp_path / "lightning_logs" / "version_0" / "config.yaml").read_text())
    assert config["gradient_parity"] == {"every_n_steps": 2, "tolerance": 0.5}


@pytest.mark.parametrize(
    ("flags", "expected"),
    [(["--trainer.limit_val_batches=0"], "no validation metric: validation did not run"),
     (["--trainer.fast_dev_run=true"], "validation accuracy:")],
)
def test_common_trainer_flags_finish_cleanly(tmp_path, capsys, monkeypatch, flags, expected):
    monkeypatch.chdir(tmp_path)
    main(["fit", *FAST, *flags])
    assert expected in capsys.readouterr().out


def test_print_config_round_trips(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        main(["fit", "--print_config", "--model.optimizer.lr=0.25"])
    assert done.value.code == 0
    printed = capsys.readouterr().out
    config = yaml.safe_load(printed)
    assert config["model"]["network"]["class_path"].endswith("SigmoidMLP")
    assert config["model"]["optimizer"]["init_args"]["lr"] == 0.25 and config["error_terms"]["every_n_steps"] == 50
    assert config["error_terms"]["heatmap"] is True and config["error_terms"]["check_finite"] is False
    assert config["gradient_parity"] == {"every_n_steps": 50, "tolerance": 1e-4}
    (tmp_path / "config.yaml").write_text(printed)
    main(["fit", "-c", "config.yaml", *FAST])
    saved = yaml.safe_load((tmp_path / "lightning_logs" / "version_0" / "config.yaml").read_text())
    assert saved["model"]["optimizer"]["init_args"]["lr"] == 0.25


def test_unknown_loss_lists_the_choices(capsys):
    with pytest.raises(SystemExit) as done:
        main(["fit", "--model.loss=hinge"])
    assert done.value.code != 0
    err = capsys.readouterr().err
    assert "hinge" in err and "cross_entropy" in err and "mse" in err


@pytest.mark.slow
def test_default_fit_learns_the_digits_in_well_under_a_minute(tmp_path):
    """The README's main job, as a user runs it: the console script, no arguments."""
    script = Path(sys.executable).parent / "manual-backprop"
    started = time.monotonic()
    done = subprocess.run([str(script), "fit"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    accuracy = float(re.search(r"validation accuracy: (\d+\.\d)%", done.stdout).group(1))
    assert accuracy > 90.0
    assert "tensorboard --logdir lightning_logs" in done.stdout
    assert elapsed < 60, f"took {elapsed:.0f} s"
    events = read_events(tmp_path / "lightning_logs" / "version_0")
    tags = events.Tags()
    # everything the error-term and parity callbacks log is there without a flag, every 50 steps
    assert {"error_terms/fc1", "error_terms/fc2"} <= set(tags["histograms"])
    for kind in ("rms", "mean_abs", "max_abs", "zero_share"):
        assert {f"error_terms_{kind}/fc1", f"error_terms_{kind}/fc2"} <= set(tags["scalars"])
    assert {"error_terms_ratio/fc1", "update_ratio/fc1.weight", "parity/fc1", "parity/fc2"} <= set(tags["scalars"])
    assert tags["images"] == ["error_terms_heatmap"] and tags["tensors"] == ["custom_scalars__config__"]
    assert [s.step for s in events.Scalars("parity/fc1")][:3] == [0, 50, 100]
    assert all(s.value < 1e-4 for s in events.Scalars("parity/fc1"))
    assert "GradientParityCallback" not in done.stderr


def test_a_datamodules_own_error_is_the_headline(tmp_path, capsys, monkeypatch):
    """A missing file is what the user reads first, not jsonargparse's 'union subtypes' wording."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        main(["fit", "--data=TabularDataModule", "--data.path=missing.csv", "--data.target=y"])
    assert done.value.code != 0
    err = capsys.readouterr().err
    assert f"error: TabularDataModule: no such file: {tmp_path / 'missing.csv'}\n" in err
