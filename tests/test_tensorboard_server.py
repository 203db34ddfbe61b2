"""End to end: a finished run's error terms, as a real ``tensorboard`` server serves them over HTTP.

A short real training run (Lightning Trainer, TensorBoardLogger, ErrorTermLogger) writes its event
files; the venv's ``tensorboard`` command serves that directory on localhost; the test asks the
server's HTTP API (the routes its plugins register, ``tensorboard/plugins/*/*_plugin.py``) for what
the logger wrote and checks it against the event files as TensorBoard's own reader reads them.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_modules.callbacks import ErrorTermLogger
from lightning_modules.data import DigitsDataModule
from lightning_modules.module import ManualBackpropModule

from tb import read_events

pytestmark = pytest.mark.slow

BATCH_SIZE = 16
LAYERS = {"fc1": 32, "fc2": 10}  # the default SigmoidMLP's parametrized layers and their output widths
LOGGED_STEPS = [0, 2, 4, 6]
STARTUP_S = 90  # the server's first answer and its first full load of the run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """The event files of 8 training steps, δ logged every 2nd step."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tb")
    trainer = pl.Trainer(max_steps=8, logger=TensorBoardLogger(root / "logs", name="digits"),
                         callbacks=[ErrorTermLogger(every_n_steps=2)], enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
                         limit_val_batches=1)
    trainer.fit(ManualBackpropModule(), DigitsDataModule(batch_size=BATCH_SIZE))
    return Path(trainer.logger.log_dir)


@pytest.fixture(scope="module")
def server(run_dir) -> Iterator[str]:
    """A real ``tensorboard`` process serving the run's log root; its base URL. Stopped by its pid."""
    logdir = run_dir.parent.parent  # logs/, holding digits/version_0
    port = _free_port()
    command = [str(Path(sys.executable).parent / "tensorboard"), "--logdir", str(logdir),
               "--port", str(port), "--host", "127.0.0.1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"tensorboard exited with {process.returncode}:\n{process.stdout.read()[-3000:]}")
            try:
                _get(base, "/data/environment")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    pytest.fail(f"tensorboard did not answer on {base} within {STARTUP_S} s")
                time.sleep(0.2)
        yield base
    finally:
        _stop(process)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    """Terminate by pid, wait, kill if it does not go; its stdout pipe closed."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=20)
    process.stdout.close()


def _get(base: str, route: str, **params) -> bytes:
    url = base + route + ("?" + urllib.parse.urlencode(params) if params else "")
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def _get_json(base: str, route: str, **params):
    return json.loads(_get(base, route, **params))


def _served(fetch: Callable[[], object], ready: Callable[[object], bool]) -> object:
    """``fetch()`` once ``ready`` says the server has loaded all of it (it reads the files in the background)."""
    deadline = time.monotonic() + STARTUP_S
    while True:
        try:
            answer = fetch()
            if ready(answer):
                return answer
        except urllib.error.HTTPError as error:
            if error.code != 404:  # 404: that run or tag is not loaded yet
                raise
            answer = error
        if time.monotonic() > deadline:
            pytest.fail(f"the server's answer never became complete; last: {str(answer)[:2000]}")
        time.sleep(0.2)


def _run_name(run_dir: Path) -> str:
    return f"{run_dir.parent.name}/{run_dir.name}"  # relative to --logdir: digits/version_0


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_histograms_hold_every_error_term_of_every_logged_step(server, run_dir, layer):
    tag, run = f"error_terms/{layer}", _run_name(run_dir)
    served = _served(lambda: _get_json(server, "/data/plugin/histograms/histograms", run=run, tag=tag),
                     lambda events: len(events) == len(LOGGED_STEPS))
    written = read_events(run_dir).Histograms(tag)
    assert [step for _, step, _ in served] == [h.step for h in written] == LOGGED_STEPS
    for (_, _, buckets), event in zip(served, written):
        histogram = event.histogram_value
        # buckets are [left edge, right edge, count]: every δ of the batch is in one of them, the inner
        # edges rise, and the outer edges are the smallest and largest δ. (The server keeps the empty
        # bucket torch writes below the smallest δ, so the first bucket may run backwards: [min, edge, 0].)
        assert sum(count for _, _, count in buckets) == histogram.num == BATCH_SIZE * LAYERS[layer]
        inner_edges = [right for _, right, _ in buckets[:-1]]
        assert inner_edges == sorted(inner_edges)
        assert buckets[0][0] == pytest.approx(histogram.min, rel=1e-6)
        assert buckets[-1][1] == pytest.approx(histogram.max, rel=1e-6)


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_scalars_are_the_event_files_values_and_agree_with_the_histograms(server, run_dir, layer):
    run, events = _run_name(run_dir), read_events(run_dir)
    histograms = {h.step: h.histogram_value for h in events.Histograms(f"error_terms/{layer}")}
    for kind in ("rms", "max_abs"):
        tag = f"error_terms_{kind}/{layer}"
        served = _served(lambda tag=tag: _get_json(server, "/data/plugin/scalars/scalars", run=run, tag=tag),
                         lambda points: len(points) == len(LOGGED_STEPS))
        written = events.Scalars(tag)
        # exactly what TensorBoard's EventAccumulator reads from the file: (wall time, step, value)
        assert [(step, value) for _, step, value in served] == [(s.step, s.value) for s in written]
        assert [wall_time for wall_time, _, _ in served] == pytest.approx([s.wall_time for s in written])
        for _, step, value in served:
            # and the scalar is the statistic of that step's δ, which the histogram summarises independently
            h = histograms[step]
            expected = math.sqrt(h.sum_squares / h.num) if kind == "rms" else max(-h.min, h.max)
            assert value == pytest.approx(expected, rel=1e-5), (tag, step)
            assert value > 0


def test_server_lists_the_run_with_its_error_term_tags(server, run_dir):
    run = _run_name(run_dir)
    histograms = _served(lambda: _get_json(server, "/data/plugin/histograms/tags"), lambda index: run in index)
    assert {f"error_terms/{layer}" for layer in LAYERS} <= set(histograms[run])
    scalars = _served(lambda: _get_json(server, "/data/plugin/scalars/tags"), lambda index: run in index)
    assert {f"error_terms_{kind}/{layer}" for kind in ("rms", "max_abs") for layer in LAYERS} <= set(scalars[run])
    assert run in _get_json(server, "/data/runs")
