"""The cost of recording error terms: the default ``manual-backprop fit`` run with and without ``ErrorTermLogger``.

Both variants are the run the command line makes with no arguments — ``SigmoidMLP`` 64-32-10 on the
digits through ``ManualBackpropModule`` and ``DigitsDataModule``, a real ``Trainer`` with a
``TensorBoardLogger``, 10 epochs, seed 0 — except that the progress bar is off and that
``GradientParityCallback`` (a separate check, on in the command line's run) is in neither. "with"
adds ``ErrorTermLogger()`` at its defaults, as the command line does; "without" leaves it out.
Nothing else differs.

Timed: the fit loop, from ``on_train_start`` to ``on_train_end`` (training and validation epochs,
checkpoints; not the Trainer's start-up), and, separately, the training batches alone (from each
``on_train_batch_start`` to its ``on_train_batch_end``, the part the logger works in). A clock
callback is put first and another last in the callback list, so every other callback's work on
those hooks falls inside the timed span. The fit loop is timed in wall-clock seconds and in this
process's CPU seconds (all its threads, TensorBoard's writer thread included).

Both variants run in this one process, interleaved step by step: each runs on its own thread, and
a baton lets only one of them run at a time, handed over at every training batch's start, so each
training step of one run is followed by the same step of the other and both meet the same
machine (a shared machine's speed drifts by tens of percent over seconds; interleaving whole runs
gave ratios from 0.75 to 1.27 here). A clock counts only its own run's turns. After an untimed warm-up
pair, each repeat is one such pair (the run that starts alternates); the cost is the median over
repeats of the ratio with/without, with its spread (smallest and largest ratio). One torch thread:
the model is tiny, so more threads only add noise (the tests run on one thread for the same reason).

    .venv/bin/python benchmarks/recording_cost.py                 # 20 repeats, prints the result
    .venv/bin/python benchmarks/recording_cost.py --write-docs    # ... and updates docs/performance.md
    .venv/bin/python benchmarks/recording_cost.py --control       # "with" gets a callback that does nothing
    .venv/bin/python benchmarks/recording_cost.py --quick         # a smoke run: 20 steps, 1 repeat

``--control`` checks the method: with nothing to measure, the ratio should be 1 within the noise.
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
import threading
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

from _machine import cpu_name, write_block  # noqa: E402  (benchmarks/, the script's own folder)

DOCS = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- recording_cost: begin (written by benchmarks/recording_cost.py) -->", "<!-- recording_cost: end -->"


class Baton:
    """Whose turn it is: the two runs take turns, one training step each, so that they share the machine's moods.

    A run holds the baton from its thread's start; it hands it over at each of its training batches'
    start and waits for it back, and gives it up for good when its thread ends. Only the holder runs.
    """

    def __init__(self, first: bool):
        self._turn = first
        self._finished: set[bool] = set()
        self._changed = threading.Condition()

    def take(self, variant: bool) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._turn == variant or (not variant) in self._finished)

    def hand_over(self, variant: bool) -> None:
        with self._changed:
            self._turn = not variant
            self._changed.notify_all()
        self.take(variant)

    def finish(self, variant: bool) -> None:
        with self._changed:
            self._finished.add(variant)
            self._turn = not variant
            self._changed.notify_all()


@dataclass
class Clock:
    """One run's seconds in its fit loop (wall clock, and this process's CPU time) and in its training batches.

    Only the run's own turns count: the clock pauses while the other run has the baton.
    """

    baton: Baton
    variant: bool
    fit_loop: float = 0.0
    fit_loop_cpu: float = 0.0
    batches: float = 0.0
    steps: int = 0
    _running: bool = False
    _resumed: tuple[float, float] = (0.0, 0.0)
    _batch_started: float = 0.0

    def resume(self) -> None:
        self._running, self._resumed = True, (time.perf_counter(), time.process_time())

    def pause(self) -> None:
        if self._running:
            self._running = False
            self.fit_loop += time.perf_counter() - self._resumed[0]
            self.fit_loop_cpu += time.process_time() - self._resumed[1]

    def callbacks(self) -> tuple[pl.Callback, pl.Callback]:
        """The callbacks that go first and last in the Trainer's list."""
        return _Open(self), _Close(self)


class _Open(pl.Callback):
    """First in the list: a turn starts, and the clocks run, before any other callback's hook."""

    def __init__(self, clock: Clock):
        self.clock = clock

    def on_train_start(self, trainer, pl_module):
        self.clock.resume()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.clock.steps:  # the turn ends here: after the last batch's hooks, validation, checkpoints
            self.clock.pause()
            self.clock.baton.hand_over(self.clock.variant)
            self.clock.resume()
        self.clock._batch_started = time.perf_counter()


class _Close(pl.Callback):
    """Last in the list: the clocks read after every other callback's hook ran."""

    def __init__(self, clock: Clock):
        self.clock = clock

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.clock.batches += time.perf_counter() - self.clock._batch_started
        self.clock.steps += 1

    def on_train_end(self, trainer, pl_module):
        self.clock.pause()


class DoNothing(pl.Callback):
    """The control: a callback with no hook of its own."""


def fit(clock: Clock, log_dir: Path, max_steps: int, extra: type[pl.Callback]) -> None:
    """One default ``manual-backprop fit`` run (without its progress bar), in turns with the other."""
    clock.baton.take(clock.variant)
    try:
        pl.seed_everything(0, verbose=False)
        first, last = clock.callbacks()
        recording = [extra()] if clock.variant else []
        trainer = pl.Trainer(
            max_epochs=10, max_steps=max_steps, enable_model_summary=False, enable_progress_bar=False,
            logger=TensorBoardLogger(log_dir, name="with" if clock.variant else "without"),
            callbacks=[first, *recording, last], default_root_dir=log_dir,
        )
        trainer.fit(ManualBackpropModule(), DigitsDataModule())
    finally:
        clock.baton.finish(clock.variant)


def fit_pair(log_dir: Path, max_steps: int, with_first: bool, extra: type[pl.Callback]) -> tuple[Clock, Clock]:
    """Both runs, step by step in turns, each on its own thread; their clocks (with, without)."""
    baton = Baton(first=with_first)
    clocks = Clock(baton, True), Clock(baton, False)
    errors: list[BaseException] = []

    def run(clock: Clock) -> None:
        try:
            fit(clock, log_dir, max_steps, extra)
        except BaseException as error:  # re-raised below, in the main thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(clock,)) for clock in clocks]
    gc.collect()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return clocks


@dataclass
class Result:
    ratios_fit: list[float] = field(default_factory=list)
    ratios_fit_cpu: list[float] = field(default_factory=list)
    ratios_batches: list[float] = field(default_factory=list)
    with_fit: list[float] = field(default_factory=list)
    without_fit: list[float] = field(default_factory=list)
    with_batch_ms: list[float] = field(default_factory=list)
    without_batch_ms: list[float] = field(default_factory=list)
    steps: int = 0


def measure(repeats: int, max_steps: int, extra: type[pl.Callback] = ErrorTermLogger) -> Result:
    """``repeats`` pairs of runs, with ``extra()`` among the callbacks and without it."""
    result = Result()
    with tempfile.TemporaryDirectory() as tmp:
        fit_pair(Path(tmp), max_steps, True, extra)  # warm-up: imports, allocator, first-call costs
        for repeat in range(repeats):
            with_, without = fit_pair(Path(tmp), max_steps, repeat % 2 == 1, extra)
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


def report(result: Result, repeats: int, command: str, extra: type[pl.Callback]) -> str:
    """The docs section: the ratios, what was timed, the machine, the versions and the command."""
    def spread(values):
        return f"{statistics.median(values):.3f} (min {min(values):.3f}, max {max(values):.3f})"

    extra_s = statistics.median(w - wo for w, wo in zip(result.with_fit, result.without_fit, strict=True))
    per_logged_step = ""
    if extra is ErrorTermLogger:
        logged = len(range(0, result.steps, ErrorTermLogger().every_n_steps))
        per_logged_step = (f" The extra time, {1e3 * extra_s:.0f} ms (median), is {1e3 * extra_s / logged:.1f} ms"
                           f" per logged step ({logged} logged steps).")
    return "\n".join([
        BEGIN,
        f"| | with {extra.__name__}() ÷ without |",
        "|---|---|",
        f"| fit loop (training + validation epochs), wall clock | **{spread(result.ratios_fit)}** |",
        f"| fit loop, this process's CPU time (all its threads) | {spread(result.ratios_fit_cpu)} |",
        f"| training batches only, wall clock | {spread(result.ratios_batches)} |",
        "",
        f"Median over {repeats} repeats, each a pair of runs interleaved step by step, of the ratio within a"
        f" repeat (smallest and largest in brackets). A run is {result.steps} training steps; the fit loop took"
        f" {statistics.median(result.without_fit):.2f} s without {extra.__name__} and"
        f" {statistics.median(result.with_fit):.2f} s with it (medians), a training batch"
        f" {statistics.median(result.without_batch_ms):.2f} ms and {statistics.median(result.with_batch_ms):.2f} ms."
        + per_logged_step,
        "",
        f"- Machine: {cpu_name()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()};"
        f" torch threads: {torch.get_num_threads()}.",
        f"- Versions: Python {platform.python_version()}, torch {torch.__version__}, pytorch-lightning"
        f" {pl.__version__}, tensorboard {tensorboard.__version__}.",
        f"- Command: `{command}`",
        END,
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed pairs of runs (default 20)")
    parser.add_argument("--control", action="store_true",
                        help="'with' gets DoNothing() instead of ErrorTermLogger(): the method's noise")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20 steps, 1 repeat; not a measurement")
    parser.add_argument("--write-docs", action="store_true", help=f"replace the measured section of {DOCS.name}")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.quick and args.write_docs:
        parser.error("--quick is a smoke run, not a measurement: it does not write the docs")
    if args.control and args.write_docs:
        parser.error("--control measures the method, not the logger: it does not write the docs")
    extra = DoNothing if args.control else ErrorTermLogger
    repeats, max_steps = (1, 20) if args.quick else (args.repeats, -1)

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*The number of training batches.*")
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)

    result = measure(repeats, max_steps, extra)
    flags = argv if argv is not None else sys.argv[1:]
    command = " ".join([".venv/bin/python", "benchmarks/recording_cost.py", *flags])
    section = report(result, repeats, command, extra)
    print(section)
    if args.write_docs:
        write_block(DOCS, BEGIN, END, section)


if __name__ == "__main__":
    main()
