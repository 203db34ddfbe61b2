"""The cost of recording error terms: the default ``manual-backprop fit`` run with and without ``ErrorTermLogger``.

Both variants are the run the command line makes with no arguments — ``SigmoidMLP`` 64-32-10 on the
digits through ``ManualBackpropModule`` and ``DigitsDataModule``, a real ``Trainer`` with a
``TensorBoardLogger``, 10 epochs, seed 0 — except that the progress bar is off. "with" adds
``ErrorTermLogger()`` at its defaults, as the command line does; "without" leaves it out. Nothing
else differs.

Timed: the fit loop, from ``on_train_start`` to ``on_train_end`` (training and validation epochs,
checkpoints; not the Trainer's start-up), and, separately, the training batches alone (from each
``on_train_batch_start`` to its ``on_train_batch_end``, the part the logger works in). A clock
callback is put first and another last in the callback list, so every other callback's work on
those hooks falls inside the timed span.

Both variants run in this one process, interleaved (A B, then B A, ...) after one untimed warm-up
each; the cost is the median over repeats of the ratio with/without within a repeat, with its
spread (smallest and largest ratio). One torch thread: the model is tiny, so more threads only add
noise (the tests run on one thread for the same reason).

    .venv/bin/python benchmarks/recording_cost.py                 # 10 repeats, prints the result
    .venv/bin/python benchmarks/recording_cost.py --write-docs    # ... and updates docs/performance.md
    .venv/bin/python benchmarks/recording_cost.py --quick         # a smoke run: 20 steps, 1 repeat
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytorch_lightning as pl
import tensorboard
import torch
from pytorch_lightning.loggers import TensorBoardLogger

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout

from lightning_modules.callbacks import ErrorTermLogger  # noqa: E402
from lightning_modules.data import DigitsDataModule  # noqa: E402
from lightning_modules.module import ManualBackpropModule  # noqa: E402

DOCS = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- recording_cost: begin (written by benchmarks/recording_cost.py) -->", "<!-- recording_cost: end -->"


@dataclass
class Clock:
    """Seconds spent in the fit loop (wall clock and this process's CPU time) and in the training batches."""

    fit_loop: float = 0.0
    fit_loop_cpu: float = 0.0
    batches: float = 0.0
    steps: int = 0
    _fit_started: float = 0.0
    _fit_started_cpu: float = 0.0
    _batch_started: float = 0.0
    callbacks: list[pl.Callback] = field(init=False)

    def __post_init__(self):
        self.callbacks = [_Open(self), _Close(self)]


class _Open(pl.Callback):
    """First in the list: starts the clocks before any other callback's hook runs."""

    def __init__(self, clock: Clock):
        self.clock = clock

    def on_train_start(self, trainer, pl_module):
        self.clock._fit_started = time.perf_counter()
        self.clock._fit_started_cpu = time.process_time()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.clock._batch_started = time.perf_counter()


class _Close(pl.Callback):
    """Last in the list: stops the clocks after every other callback's hook ran."""

    def __init__(self, clock: Clock):
        self.clock = clock

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.clock.batches += time.perf_counter() - self.clock._batch_started
        self.clock.steps += 1

    def on_train_end(self, trainer, pl_module):
        self.clock.fit_loop = time.perf_counter() - self.clock._fit_started
        self.clock.fit_loop_cpu = time.process_time() - self.clock._fit_started_cpu


def fit(with_logger: bool, log_dir: Path, max_steps: int) -> Clock:
    """One default ``manual-backprop fit`` run (without its progress bar); its clock."""
    pl.seed_everything(0, verbose=False)
    clock = Clock()
    recording = [ErrorTermLogger()] if with_logger else []
    trainer = pl.Trainer(
        max_epochs=10, max_steps=max_steps, enable_model_summary=False, enable_progress_bar=False,
        logger=TensorBoardLogger(log_dir, name="with" if with_logger else "without"),
        callbacks=[clock.callbacks[0], *recording, clock.callbacks[1]], default_root_dir=log_dir,
    )
    trainer.fit(ManualBackpropModule(), DigitsDataModule())
    return clock


@dataclass
class Result:
    ratios_fit: list[float]
    ratios_fit_cpu: list[float]
    ratios_batches: list[float]
    with_fit: list[float]
    without_fit: list[float]
    with_batch_ms: list[float]
    without_batch_ms: list[float]
    steps: int


def measure(repeats: int, max_steps: int) -> Result:
    result = Result([], [], [], [], [], [], [], 0)
    with tempfile.TemporaryDirectory() as tmp:
        for variant in (False, True):
            fit(variant, Path(tmp), max_steps)  # warm-up: imports, allocator, first-call costs
        for repeat in range(repeats):
            clocks = {}
            for variant in ((True, False) if repeat % 2 == 0 else (False, True)):
                gc.collect()
                clocks[variant] = fit(variant, Path(tmp), max_steps)
            with_, without = clocks[True], clocks[False]
            assert with_.steps == without.steps
            result.steps = with_.steps
            result.ratios_fit.append(with_.fit_loop / without.fit_loop)
            result.ratios_fit_cpu.append(with_.fit_loop_cpu / without.fit_loop_cpu)
            result.ratios_batches.append(with_.batches / without.batches)
            result.with_fit.append(with_.fit_loop)
            result.without_fit.append(without.fit_loop)
            result.with_batch_ms.append(1e3 * with_.batches / with_.steps)
            result.without_batch_ms.append(1e3 * without.batches / without.steps)
            print(f"repeat {repeat + 1}/{repeats}: fit loop {with_.fit_loop:.2f} s with / {without.fit_loop:.2f} s "
                  f"without = {result.ratios_fit[-1]:.3f}; CPU time {result.ratios_fit_cpu[-1]:.3f}; "
                  f"training batches {result.ratios_batches[-1]:.3f}",
                  flush=True)
    return result


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def report(result: Result, repeats: int, command: str) -> str:
    """The docs section: the ratios, what was timed, the machine, the versions and the command."""
    def spread(values):
        return f"{statistics.median(values):.3f} (min {min(values):.3f}, max {max(values):.3f})"

    return "\n".join([
        BEGIN,
        "| | with ErrorTermLogger() ÷ without |",
        "|---|---|",
        f"| fit loop (training + validation epochs), wall clock | **{spread(result.ratios_fit)}** |",
        f"| fit loop, this process's CPU time (all its threads) | {spread(result.ratios_fit_cpu)} |",
        f"| training batches only, wall clock | {spread(result.ratios_batches)} |",
        "",
        f"Median over {repeats} interleaved repeats of the ratio within a repeat (smallest and largest in"
        f" brackets). A run is {result.steps} training steps; the fit loop took"
        f" {statistics.median(result.without_fit):.2f} s without the logger and"
        f" {statistics.median(result.with_fit):.2f} s with it (medians), a training batch"
        f" {statistics.median(result.without_batch_ms):.2f} ms and {statistics.median(result.with_batch_ms):.2f} ms.",
        "",
        f"- Machine: {_cpu()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()};"
        f" torch threads: {torch.get_num_threads()}.",
        f"- Versions: Python {platform.python_version()}, torch {torch.__version__}, pytorch-lightning"
        f" {pl.__version__}, tensorboard {tensorboard.__version__}.",
        f"- Command: `{command}`",
        END,
    ])


def write_docs(section: str) -> None:
    text = DOCS.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{DOCS} has no {BEGIN} ... {END} block to replace")
    head, rest = text.split(BEGIN, 1)
    DOCS.write_text(head + section + rest.split(END, 1)[1])
    print(f"updated {DOCS.relative_to(ROOT)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed runs of each variant (default 10)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20 steps, 1 repeat; not a measurement")
    parser.add_argument("--write-docs", action="store_true", help=f"replace the measured section of {DOCS.name}")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.quick and args.write_docs:
        parser.error("--quick is a smoke run, not a measurement: it does not write the docs")
    repeats, max_steps = (1, 20) if args.quick else (args.repeats, -1)

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*The number of training batches.*")
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)

    result = measure(repeats, max_steps)
    flags = argv if argv is not None else sys.argv[1:]
    command = " ".join([".venv/bin/python", "benchmarks/recording_cost.py", *flags])
    section = report(result, repeats, command)
    print(section)
    if args.write_docs:
        write_docs(section)


if __name__ == "__main__":
    main()
