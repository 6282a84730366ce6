"""What the benchmarks read about processes and write about runs, once.

CPU time comes from ``/proc/<pid>/task/*/schedstat`` (nanoseconds, every
thread), not ``/proc/<pid>/stat`` (10 ms ticks): a few thousand tasks cost a
redis-server well under a tick each, so ticks would round a run's figure.
Standard library only: the driver imports this under every peer's interpreter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def cpu_s(pid: int | None) -> float | None:
    """CPU seconds of all of a process's threads so far; None if it is gone."""
    if not pid:
        return None
    total = 0
    try:
        threads = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    for task in threads:
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that just ended
    return total / 1e9


def write_json(path: str | None, report: Any) -> None:
    """The whole report as JSON, when ``--json PATH`` asked for it."""
    if path:
        with open(path, "w") as f:
            json.dump(report, f, indent=2)
