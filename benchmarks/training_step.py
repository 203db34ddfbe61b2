"""One training step, manual vs native: ``manual_backprop.convert(model)`` against the same model with autograd.

For each model of issue 8 — an MLP, a sigmoid MLP, a CNN with batch norm and pooling, the zoo's
LSTM tagger, a transformer encoder and a large MLP — the native model and a converted deep copy
(same weights, same data, same loss, each with its own ``torch.optim.SGD``) are measured in this
one process:

- step time: one training step is ``zero_grad``, forward, loss, ``backward`` and ``optimizer.step``.
  Both variants are warmed up first, then timed step by step in turns (native, manual, manual,
  native, ...: the one that goes first alternates), so that both meet the same machine: a shared
  machine's speed drifts by tens of percent over seconds. The result is the median, over the pairs,
  of the ratio manual/native within a pair, with the 10th and 90th percentile of those ratios;
- activation memory: the bytes autograd keeps for backward after one forward and loss, seen by a
  ``torch.autograd.graph.saved_tensors_hooks`` pack hook: the sum of ``untyped_storage().nbytes()``
  over the distinct storages of the saved tensors, leaving out the model's parameters and buffers
  (they exist whether or not anything is saved). A tensor saved twice, or a view of a saved tensor,
  counts once;
- peak memory: the most bytes allocated at once during one step (forward, loss, backward, optimizer
  step), above what was allocated when it began (parameters, optimizer state and data; gradients
  are set to None first). On CUDA that is ``torch.cuda.max_memory_allocated`` minus
  ``memory_allocated``; on the CPU, where no such counter exists, the profiler's memory events
  (``profile_memory=True``: every allocation and free of torch's CPU allocator) are summed in time
  order and their high-water mark taken;
- with ``--compile``: the step time again, both variants' forward and loss compiled together by
  ``torch.compile`` (the optimizer step stays eager); compile time (the first step, excluded from
  the timing) and graph breaks are printed;
- for the large MLP, the share of the machine's own matrix-multiply throughput a step reaches: the
  same products a step computes (per Linear: forward, gradient of the weight, gradient of the input
  except for the first layer, whose input needs none) run as plain ``torch.mm`` calls, timed in the
  same turns as the steps; share = (step FLOPs ÷ step time) ÷ (mm FLOPs ÷ mm time).

One torch thread for every model but the large MLP, which uses all cores (``--large-threads``).
Runs on the CPU and, where ``torch.cuda.is_available()``, on CUDA too (``--device``); on CUDA each
timed step is fenced by ``torch.cuda.synchronize()``.

    .venv/bin/python benchmarks/training_step.py                        # all models, eager, prints the table
    .venv/bin/python benchmarks/training_step.py --compile --write-docs # ... and torch.compile, writes the docs
    .venv/bin/python benchmarks/training_step.py --models mlp,cnn --device cpu --pairs 50
    .venv/bin/python benchmarks/training_step.py --quick                # a smoke run: tiny sizes, few steps

``--quick`` measures nothing (tiny models, a handful of steps) and refuses ``--write-docs``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import itertools
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout: manual_backprop and the zoo in tests/

import manual_backprop  # noqa: E402
from tests.zoo import LSTMTagger, TransformerEncoderModel  # noqa: E402

from _machine import cpu_name, write_block  # noqa: E402  (benchmarks/, the script's own folder)

DOCS = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- training_step: begin (written by benchmarks/training_step.py) -->", "<!-- training_step: end -->"

#: the issue's targets, manual ÷ native
TARGET_EAGER, TARGET_LARGE, TARGET_MEMORY, TARGET_COMPILED = 1.10, 1.03, 1.00, 1.05


# -- the models -------------------------------------------------------------------------------------
@dataclass
class Workload:
    """A model with its batch, targets and loss; ``products`` lists the (M, K, N) matrix products of a step."""

    model: nn.Module
    inputs: tuple[Tensor, ...]
    target: Tensor
    loss_fn: nn.Module
    products: list[tuple[int, int, int]] = field(default_factory=list)


def mlp_products(batch: int, widths: list[int]) -> list[tuple[int, int, int]]:
    """The products of one step of an MLP (n: batch; a Linear in → out): forward (n×in)·(in×out), the weight's
    gradient δᵀ·a_prev (out×n)·(n×in) and, for every layer but the first, the input's gradient δ·W (n×out)·(out×in)."""
    products = []
    for layer, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        products += [(batch, fan_in, fan_out), (fan_out, batch, fan_in)]
        if layer:
            products.append((batch, fan_out, fan_in))
    return products


def mlp(batch: int, widths: list[int], activation: type[nn.Module], products: bool = False) -> Workload:
    layers: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(widths):
        layers += [nn.Linear(fan_in, fan_out), activation()]
    return Workload(nn.Sequential(*layers[:-1]), (torch.randn(batch, widths[0]),),
                    torch.randint(0, widths[-1], (batch,)), nn.CrossEntropyLoss(),
                    mlp_products(batch, widths) if products else [])


def cnn(batch: int, channels: tuple[int, int], side: int) -> Workload:
    c1, c2 = channels
    model = nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(c2 * (side // 4) ** 2, 10),
    )
    return Workload(model, (torch.randn(batch, 1, side, side),), torch.randint(0, 10, (batch,)), nn.CrossEntropyLoss())


def lstm_tagger(embedding: int, hidden: int, vocab: int, tags: int, length: int) -> Workload:
    """The zoo's ``LSTMTagger`` (the PyTorch tutorial's: one sentence at a time)."""
    return Workload(LSTMTagger(embedding, hidden, vocab, tags), (torch.randint(0, vocab, (length,)),),
                    torch.randint(0, tags, (length,)), nn.NLLLoss())


class TokensToRows(nn.Module):
    """The zoo's ``TransformerEncoderModel`` (an ``nn.TransformerEncoder``, causal mask, dropout 0.1) with its
    output (batch, seq, ntoken) flattened to one row per token for the cross-entropy."""

    def __init__(self, ntoken: int, d_model: int, nhead: int, d_hid: int, nlayers: int):
        super().__init__()
        self.model = TransformerEncoderModel(ntoken, d_model, nhead, d_hid, nlayers, dropout=0.1)

    def forward(self, src: Tensor) -> Tensor:
        return self.model(src).flatten(0, 1)


def transformer(batch: int, seq: int, ntoken: int, d_model: int, nhead: int, d_hid: int, nlayers: int) -> Workload:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nn.TransformerEncoder's note on nested tensors
        model = TokensToRows(ntoken, d_model, nhead, d_hid, nlayers)
    return Workload(model, (torch.randint(0, ntoken, (batch, seq)),), torch.randint(0, ntoken, (batch * seq,)),
                    nn.CrossEntropyLoss())


@dataclass(frozen=True)
class Spec:
    """One model of the benchmark: how to build it (full size or ``--quick``), how many timed pairs."""

    name: str
    size: str
    build: Callable[[bool], Workload]
    pairs: int
    large: bool = False  # all cores (``--large-threads``) and the matrix-multiply share


SPECS = [
    Spec("mlp", "ReLU 784-512-256-10, batch 256",
         lambda quick: mlp(16 if quick else 256, [784, 64, 32, 10] if quick else [784, 512, 256, 10], nn.ReLU), 300),
    Spec("sigmoid_mlp", "sigmoid 64-256-256-10, batch 512",
         lambda quick: mlp(16 if quick else 512, [64, 32, 32, 10] if quick else [64, 256, 256, 10], nn.Sigmoid), 400),
    Spec("cnn", "(conv3×3-BN-ReLU-maxpool) ×2 (16, 32 channels) + Linear, 1×28×28, batch 64",
         lambda quick: cnn(4, (2, 4), 8) if quick else cnn(64, (16, 32), 28), 150),
    Spec("lstm_tagger", "zoo LSTMTagger: embedding 100, hidden 128, vocab 10000, 17 tags, one 30-token sentence",
         lambda quick: lstm_tagger(8, 8, 50, 5, 6) if quick else lstm_tagger(100, 128, 10_000, 17, 30), 300),
    Spec("transformer", "zoo TransformerEncoderModel: d_model 128, 4 heads, FF 512, 2 layers, vocab 1000, "
         "seq 64, batch 32",
         lambda quick: transformer(2, 5, 11, 8, 2, 16, 2) if quick else transformer(32, 64, 1000, 128, 4, 512, 2), 60),
    Spec("large_mlp", "ReLU 4096-4096-4096-10, batch 512",
         lambda quick: mlp(16, [64, 64, 64, 10], nn.ReLU, True) if quick else
         mlp(512, [4096, 4096, 4096, 10], nn.ReLU, True), 25, large=True),
]
SPEC_BY_NAME = {spec.name: spec for spec in SPECS}


# -- one variant: a model, its loss and optimizer ---------------------------------------------------
class Step(nn.Module):
    """Forward and loss as one module, so that ``torch.compile`` sees both."""

    def __init__(self, model: nn.Module, loss_fn: nn.Module):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, inputs: tuple[Tensor, ...], target: Tensor) -> Tensor:
        return self.loss_fn(self.model(*inputs), target)


@dataclass
class Variant:
    name: str
    step_module: nn.Module
    inputs: tuple[Tensor, ...]
    target: Tensor
    optimizer: torch.optim.Optimizer
    compiled: Callable[..., Tensor] | None = None  # torch.compile(step_module), with --compile

    def forward(self, inputs: tuple[Tensor, ...], target: Tensor) -> Tensor:
        """Forward and loss."""
        return (self.step_module if self.compiled is None else self.compiled)(inputs, target)

    def step(self) -> None:
        self.optimizer.zero_grad()
        self.forward(self.inputs, self.target).backward()
        self.optimizer.step()


def variants(work: Workload, device: torch.device) -> tuple[Variant, Variant]:
    """The native model and a converted deep copy of it (same weights), each with its own SGD."""
    native = Step(work.model, work.loss_fn).to(device)
    manual = manual_backprop.convert(copy.deepcopy(native))
    inputs, target = tuple(t.to(device) for t in work.inputs), work.target.to(device)
    return tuple(Variant(name, module, inputs, target, torch.optim.SGD(module.parameters(), lr=1e-3))
                 for name, module in (("native", native), ("manual", manual)))  # type: ignore[return-value]


def check_same_model(native: Variant, manual: Variant) -> None:
    """The two are one model: the same loss in eval mode (no dropout, batch norm's running statistics)."""
    for variant in (native, manual):
        variant.step_module.eval()
    with torch.no_grad():
        a, b = native.forward(native.inputs, native.target), manual.forward(manual.inputs, manual.target)
    for variant in (native, manual):
        variant.step_module.train()
    if not torch.allclose(a, b, rtol=1e-4, atol=1e-5):
        name = type(native.step_module.model).__name__
        raise SystemExit(f"{name}: the converted model's loss {b.item()} is not the native one's {a.item()}")


def native_nodes(manual: Variant) -> list[tuple[str, str, int]]:
    """Native gradient nodes left in the converted model's backward (should be none)."""
    return manual_backprop.coverage(manual.step_module.model, *manual.inputs).native


# -- the measurements -------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - start


def interleaved(runs: list[Callable[[], object]], pairs: int, warmup: int, device: torch.device) -> list[list[float]]:
    """Seconds of each run, ``pairs`` times, in turns (the order reverses every round), after ``warmup`` untimed
    rounds."""
    for _ in range(warmup):
        for run in runs:
            run()
    seconds: list[list[float]] = [[] for _ in runs]
    gc.collect()
    gc.disable()  # a collection would land in whichever step happens to run
    try:
        for round_ in range(pairs):
            order = list(range(len(runs)))
            if round_ % 2:
                order.reverse()
            for i in order:
                seconds[i].append(timed(runs[i], device))
    finally:
        gc.enable()
    return seconds


def saved_bytes(variant: Variant) -> int:
    """Bytes autograd keeps for backward after one forward and loss: distinct storages of the saved tensors,
    the model's parameters and buffers left out."""
    module = variant.step_module
    own = {t.untyped_storage().data_ptr() for t in [*module.parameters(), *module.buffers()]}
    storages: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in own:
            storages[storage.data_ptr()] = max(storages.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    variant.optimizer.zero_grad()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = variant.forward(variant.inputs, variant.target)
    del loss
    return sum(storages.values())


def peak_bytes(variant: Variant, device: torch.device) -> int:
    """The most bytes allocated at once during one step, above what was allocated when it began."""
    variant.optimizer.zero_grad()
    gc.collect()
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        variant.step()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        variant.step()
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type().name == "CPU"]
    allocated = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        allocated += event.nbytes()
        peak = max(peak, allocated)
    return peak


def compiled(variant: Variant) -> tuple[Variant, float, int, int]:
    """The variant with its forward and loss compiled; the first step's seconds (the compile), graphs, breaks."""
    from torch._dynamo.utils import counters

    counters.clear()
    fast = Variant(variant.name, variant.step_module, variant.inputs, variant.target, variant.optimizer,
                   torch.compile(variant.step_module))
    start = time.perf_counter()
    fast.step()
    fast.step()  # a second call may recompile (guards on the first call's state)
    seconds = time.perf_counter() - start
    return fast, seconds, counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())


# -- one model ---------------------------------------------------------------------------------------
def quantiles(values: list[float]) -> tuple[float, float, float]:
    """Median, 10th and 90th percentile."""
    if len(values) < 2:
        return values[0], values[0], values[0]
    deciles = statistics.quantiles(values, n=10, method="inclusive")
    return statistics.median(values), deciles[0], deciles[-1]


@dataclass
class Row:
    spec: Spec
    device: str
    threads: int
    pairs: int
    native_ms: float
    manual_ms: float
    ratio: tuple[float, float, float]
    saved: tuple[int, int]
    peak: tuple[int, int]
    native_nodes: list[tuple[str, str, int]]
    compiled_ratio: tuple[float, float, float] | None = None
    compiled_ms: tuple[float, float] | None = None
    compile_s: tuple[float, float] | None = None
    graphs: tuple[tuple[int, int], tuple[int, int]] | None = None
    compile_error: str | None = None
    mm: dict[str, float] = field(default_factory=dict)


def measure(spec: Spec, device: torch.device, quick: bool, pairs: int, compile_: bool, threads: int) -> Row:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    work = spec.build(quick)
    native, manual = variants(work, device)
    check_same_model(native, manual)
    left_native = native_nodes(manual)
    warmup = 1 if quick or spec.large else 5
    saved = saved_bytes(native), saved_bytes(manual)
    for variant in (native, manual):
        variant.step()  # a first step's one-off costs (lazy set-up) stay out of the peak
    peak = peak_bytes(native, device), peak_bytes(manual, device)

    runs: list[Callable[[], object]] = [native.step, manual.step]
    operands = [(torch.randn(m, k, device=device), torch.randn(k, n, device=device)) for m, k, n in work.products]
    if operands:
        runs.append(lambda: [torch.mm(a, b) for a, b in operands])
    seconds = interleaved(runs, pairs, warmup, device)
    row = Row(spec, device.type, threads, pairs, 1e3 * statistics.median(seconds[0]),
              1e3 * statistics.median(seconds[1]), quantiles([m / n for n, m in zip(*seconds[:2], strict=True)]),
              saved, peak, left_native)
    if operands:
        flops = sum(2 * m * k * n for m, k, n in work.products)
        row.mm = {"flops": flops, "mm_gflops": flops / statistics.median(seconds[2]) / 1e9,
                  "native_gflops": flops / statistics.median(seconds[0]) / 1e9,
                  "manual_gflops": flops / statistics.median(seconds[1]) / 1e9,
                  "native_share": statistics.median(mm / step for mm, step in zip(seconds[2], seconds[0], strict=True)),
                  "manual_share": statistics.median(mm / step for mm, step in zip(seconds[2], seconds[1], strict=True))}
    if compile_:
        torch._dynamo.reset()  # each model gets fresh code caches: the limit on recompilations is per code object
        try:
            fast_native, s_native, *g_native = compiled(native)
            fast_manual, s_manual, *g_manual = compiled(manual)
        except Exception as error:  # reported in the table; the other models still run
            row.compile_error = f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
        else:
            seconds = interleaved([fast_native.step, fast_manual.step], max(1, pairs // 2), warmup, device)
            row.compiled_ratio = quantiles([m / n for n, m in zip(*seconds, strict=True)])
            row.compiled_ms = 1e3 * statistics.median(seconds[0]), 1e3 * statistics.median(seconds[1])
            row.compile_s = s_native, s_manual
            row.graphs = tuple(g_native), tuple(g_manual)  # type: ignore[assignment]
        torch._dynamo.reset()
    return row


# -- the report --------------------------------------------------------------------------------------
def _code_version() -> str:
    """The commit measured, and whether the working tree differed from it."""
    try:
        described = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                                   cwd=ROOT, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"
    commit, dirty = described.removesuffix("-dirty"), described.endswith("-dirty")
    return f"commit {commit}" + (" with uncommitted changes" if dirty else "")


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def _ratio(q: tuple[float, float, float], target: float) -> str:
    mark = "✓" if q[0] <= target else "✗"
    return f"**{q[0]:.2f}** ({q[1]:.2f}–{q[2]:.2f}) {mark}"


def _memory(pair: tuple[int, int], target: float | None) -> str:
    native, manual = pair
    if native == 0:
        return f"{_mib(native)} → {_mib(manual)}"
    ratio = manual / native
    mark = "" if target is None else (" ✓" if ratio <= target else " ✗")
    return f"**{ratio:.2f}**{mark} ({_mib(native)} → {_mib(manual)})"


def table(rows: list[Row], compile_: bool) -> list[str]:
    header = ["model", "device", "step time manual ÷ native, median (p10–p90)", "native → manual step (ms)",
              "activation memory manual ÷ native", "peak memory manual ÷ native"]
    if compile_:
        header += ["compiled step manual ÷ native", "compiled native → manual step (ms)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        target = TARGET_LARGE if row.spec.large else TARGET_EAGER
        cells = [f"{row.spec.name}", row.device, _ratio(row.ratio, target),
                 f"{row.native_ms:.2f} → {row.manual_ms:.2f}", _memory(row.saved, TARGET_MEMORY),
                 _memory(row.peak, None)]
        if compile_:
            if row.compiled_ratio is not None and row.compiled_ms is not None:
                cells += [_ratio(row.compiled_ratio, TARGET_COMPILED),
                          f"{row.compiled_ms[0]:.2f} → {row.compiled_ms[1]:.2f}"]
            else:
                cells += [f"failed: {row.compile_error}", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def report(rows: list[Row], compile_: bool, quick: bool, command: str, code: str) -> str:
    lines = [BEGIN, *table(rows, compile_), ""]
    lines.append(f"Targets (manual ÷ native): eager step ≤ {TARGET_EAGER:.2f} for each model, ≤ {TARGET_LARGE:.2f} for "
                 f"large_mlp; activation memory ≤ {TARGET_MEMORY:.2f}; compiled step ≤ {TARGET_COMPILED:.2f}. "
                 "✓ holds, ✗ does not (by the median). Peak memory has no target.")
    lines.append("")
    for row in rows:
        threads = f"{row.threads} torch thread{'s' if row.threads > 1 else ''}" if row.device == "cpu" else "GPU"
        size = "tiny sizes (--quick)" if quick else row.spec.size
        notes = f"- **{row.spec.name}** ({row.device}): {size}; {row.pairs} timed pairs, {threads}."
        if row.native_nodes:
            notes += " Native gradient nodes left in the converted model: " + ", ".join(
                f"{op} ×{n} ({path})" for op, path, n in row.native_nodes) + "."
        if row.compile_s is not None and row.graphs is not None:
            (graphs_n, breaks_n), (graphs_m, breaks_m) = row.graphs
            notes += (f" Compiled: the first two steps (compiling) took {row.compile_s[0]:.0f} s native,"
                      f" {row.compile_s[1]:.0f} s manual; {graphs_n} graph(s), {breaks_n} graph break(s) native;"
                      f" {graphs_m} graph(s), {breaks_m} graph break(s) manual.")
        if row.mm:
            notes += (f" A step computes {row.mm['flops'] / 1e9:.1f} GFLOP in its matrix products; the same products as"
                      f" plain `torch.mm` run at {row.mm['mm_gflops']:.0f} GFLOP/s here, a native step reaches"
                      f" {row.mm['native_gflops']:.0f} GFLOP/s (**{100 * row.mm['native_share']:.0f} %** of that) and"
                      f" a manual step {row.mm['manual_gflops']:.0f} GFLOP/s"
                      f" (**{100 * row.mm['manual_share']:.0f} %**).")
        lines.append(notes)
    lines.append("")
    devices = {row.device for row in rows}
    lines.append(f"- Machine: {cpu_name()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"
                 + (f"; GPU: {torch.cuda.get_device_name()}" if "cuda" in devices else
                    "; no GPU (CUDA not available: no CUDA rows)") + ".")
    lines.append(f"- Versions: Python {platform.python_version()}, torch {torch.__version__}; manual_backprop at"
                 f" {code}.")
    lines.append(f"- Command: `{command}`")
    lines.append(END)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(SPEC_BY_NAME),
                        help=f"comma-separated, from {', '.join(SPEC_BY_NAME)} (default: all)")
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all",
                        help="all (default): the CPU, and CUDA when available")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd steps (minutes of compiling)")
    parser.add_argument("--pairs", type=int, default=None, help="timed pairs per model (default: per model, 25-400)")
    parser.add_argument("--large-threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads for large_mlp (default: all cores); the others use one")
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny sizes, 3 pairs; not a measurement")
    parser.add_argument("--write-docs", action="store_true", help=f"replace the measured section of {DOCS.name}")
    args = parser.parse_args(argv)
    if args.quick and args.write_docs:
        parser.error("--quick is a smoke run, not a measurement: it does not write the docs")
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = [name for name in names if name not in SPEC_BY_NAME]
    if unknown or not names:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(SPEC_BY_NAME)}")
    if args.pairs is not None and args.pairs < 1:
        parser.error(f"--pairs must be at least 1, got {args.pairs}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here")
    devices = [torch.device("cpu")] if args.device == "cpu" else [torch.device("cuda")] if args.device == "cuda" else (
        [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else []))
    warnings.filterwarnings("ignore", message=r".* has no hand-written backward")  # the table names such nodes

    code = _code_version()  # now, as the code was imported: others may commit while this runs
    rows = []
    for device in devices:
        for name in names:
            spec = SPEC_BY_NAME[name]
            pairs = 3 if args.quick else args.pairs or spec.pairs
            threads = args.large_threads if spec.large else 1
            start = time.perf_counter()
            row = measure(spec, device, args.quick, pairs, args.compile, threads)
            rows.append(row)
            compiled_note = "" if row.compiled_ratio is None else f", compiled {row.compiled_ratio[0]:.3f}"
            print(f"{name} ({device.type}): manual/native {row.ratio[0]:.3f} ({row.ratio[1]:.3f}-{row.ratio[2]:.3f})"
                  f"{compiled_note} [{time.perf_counter() - start:.0f} s]", flush=True)
    flags = argv if argv is not None else sys.argv[1:]
    command = " ".join([".venv/bin/python", "benchmarks/training_step.py", *flags])
    section = report(rows, args.compile, args.quick, command, code)
    print(section)
    if args.write_docs:
        write_block(DOCS, BEGIN, END, section)


if __name__ == "__main__":
    main()
