"""What the benchmark scripts share: what they say about the machine they ran on, and how they write docs."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_block(docs: Path, begin: str, end: str, section: str) -> None:
    """Replace the block from ``begin`` to ``end`` in ``docs`` by ``section`` (which holds both markers)."""
    text = docs.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{docs} has no {begin} ... {end} block to replace")
    head, rest = text.split(begin, 1)
    docs.write_text(head + section + rest.split(end, 1)[1])
    print(f"updated {docs.relative_to(docs.parents[1])}")
