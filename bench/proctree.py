"""CPU seconds of this process and every live descendant, read from /proc.

The kiosk does part of its work in child processes (the sealing worker, transcription workers); a
benchmark that counted only its own process would leave that work out.
"""

from __future__ import annotations

import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            out.extend(kids)
            todo.extend(kids)
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), 0 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / TICK


def tree_cpu(pid: int | None = None) -> dict[int, float]:
    """CPU seconds per process of the tree rooted at `pid` (default: this process)."""
    root = os.getpid() if pid is None else pid
    return {p: cpu_seconds(p) for p in [root, *descendants(root)]}


def cpu_between(before: dict[int, float], after: dict[int, float]) -> tuple[float, float]:
    """(own, children) CPU seconds spent between two tree_cpu() readings; a child born in between
    counts from zero, one that ended in between is lost (say so where it matters)."""
    root = next(iter(after))
    own = after[root] - before.get(root, 0.0)
    kids = sum(v - before.get(p, 0.0) for p, v in after.items() if p != root)
    return own, kids
