"""End to end: a finished run's error terms, as a real ``tensorboard`` server serves them over HTTP.

A short real training run (Lightning Trainer, TensorBoardLogger, ErrorTermLogger) writes its event
files; the venv's ``tensorboard`` command serves that directory on localhost; the test asks the
server's HTTP API (the routes its plugins register, ``tensorboard/plugins/*/*_plugin.py``) for what
the logger wrote and checks it against the event files as TensorBoard's own reader reads them.
"""

from __future__ import annotations

import io
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
from PIL import Image
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


def test_custom_scalars_layout_charts_every_layers_delta_rms(server, run_dir):
    run, events = _run_name(run_dir), read_events(run_dir)
    layout = _served(lambda: _get_json(server, "/data/plugin/custom_scalars/layout"), lambda layout: bool(layout))
    (category,) = [c for c in layout["category"] if c["title"] == "error terms"]

    def served_by(chart):
        """The scalars the dashboard gets for the chart: one request per tag pattern, as the dashboard makes it."""
        served = {}
        for pattern in chart["multiline"]["tag"]:
            answer = _get_json(server, "/data/plugin/custom_scalars/scalars", run=run, tag=pattern)
            assert answer["regex_valid"], pattern
            served.update(answer["tag_to_events"])
        assert served, f"the chart {chart['title']!r} shows nothing"
        return served

    charts = {chart["title"]: served_by(chart) for chart in category["chart"]}
    (rms,) = [served for title, served in charts.items() if "δ RMS per layer" in title]
    assert set(rms) == {f"error_terms_rms/{layer}" for layer in LAYERS}
    for tag, points in rms.items():
        assert [(step, value) for _, step, value in points] == [(s.step, s.value) for s in events.Scalars(tag)]
    (ratios,) = [served for title, served in charts.items() if "next layer" in title]
    assert set(ratios) == {"error_terms_ratio/fc1"}  # fc2 is the last layer: it has no next one


def test_per_layer_scalars_agree_with_each_other(server, run_dir):
    """RMS, mean |δ|, max |δ|, the share of zeros and the ratio to the next layer, as the server serves them."""
    run = _run_name(run_dir)

    def served(kind, layer):
        points = _served(lambda: _get_json(server, "/data/plugin/scalars/scalars", run=run,
                                           tag=f"error_terms_{kind}/{layer}"),
                         lambda points: len(points) == len(LOGGED_STEPS))
        return [value for _, _, value in points]

    for layer in LAYERS:
        rms, mean_abs, max_abs = served("rms", layer), served("mean_abs", layer), served("max_abs", layer)
        for r, m, x in zip(rms, mean_abs, max_abs, strict=True):
            assert 0 < m <= r * (1 + 1e-6) and r <= x * (1 + 1e-6)  # mean ≤ RMS ≤ max for |δ|
        assert served("zero_share", layer) == [0.0] * len(LOGGED_STEPS)  # sigmoid units are never dead
    ratio, rms_fc1, rms_fc2 = served("ratio", "fc1"), served("rms", "fc1"), served("rms", "fc2")
    assert ratio == pytest.approx([a / b for a, b in zip(rms_fc1, rms_fc2, strict=True)], rel=1e-5)


def test_heatmap_image_is_the_event_files_png(server, run_dir):
    run, tag = _run_name(run_dir), "error_terms_heatmap"
    written = read_events(run_dir).Images(tag)
    assert [image.step for image in written] == LOGGED_STEPS  # redrawn at every logged step
    served = _served(lambda: _get_json(server, "/data/plugin/images/images", run=run, tag=tag),
                     lambda images: len(images) == len(written))
    assert [image["step"] for image in served] == LOGGED_STEPS
    for entry, event in zip(served, written):
        png = _get(server, "/data/plugin/images/individualImage?" + entry["query"])
        assert png == event.encoded_image_string
        with Image.open(io.BytesIO(png)) as image:
            assert image.format == "PNG"
            assert image.size == (event.width, event.height)
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 10  # a picture, not a blank
