"""Task functions and payloads for the dashboard tests."""

from __future__ import annotations

import asyncio
from pathlib import Path

from taskmesh import current_task


def touch_marker(path: str) -> str:
    """What unpickling a :class:`Malicious` runs: it leaves a marker file."""
    Path(path).write_text("unpickled!")
    return path


class Malicious:
    """A value whose unpickling writes ``path`` (as a real exploit would run code)."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (touch_marker, (self.path,))


def make_malicious(path: str) -> Malicious:
    """A task whose *result* is malicious: the worker pickles it (which only
    calls __reduce__), and nobody may unpickle it for display."""
    return Malicious(path)


async def crawl(steps: int = 200, delay: float = 0.05) -> int:
    """Moves its progress bar in small steps until done or cancelled."""
    for step in range(1, steps + 1):
        await asyncio.sleep(delay)
        current_task().update_progress(step / steps, f"step {step}/{steps}")
    return steps
