"""Task functions for tests/test_listing.py (imported by the worker processes)."""

from __future__ import annotations

import sys
import threading
import time
import types
from pathlib import Path


class CustomError(Exception):
    """An exception with state beyond its message, importable on both sides."""

    def __init__(self, message: str, code: int):
        super().__init__(message, code)
        self.code = code


def raise_custom(message: str, code: int) -> None:
    raise CustomError(message, code)


def raise_value_error(message: str) -> None:
    raise ValueError(message)


def raise_ghost(message: str) -> None:
    """Raises an exception whose class exists only in this worker process
    (a module made up at run time): it pickles by reference here and cannot
    be found by the producer that unpickles it."""
    module = sys.modules.get("taskmesh_ghost_module")
    if module is None:
        module = types.ModuleType("taskmesh_ghost_module")
        sys.modules[module.__name__] = module
        ghost = type("GhostError", (Exception,), {"__module__": module.__name__})
        module.GhostError = ghost  # type: ignore[attr-defined]
    raise module.GhostError(message)  # type: ignore[attr-defined]


class UnpicklableError(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.lock = threading.Lock()  # locks do not pickle


def raise_unpicklable(message: str) -> None:
    raise UnpicklableError(message)


def _touch_and_build(marker: str, message: str) -> Exception:
    Path(marker).write_text("unpickled")
    return RuntimeError(message)


class MarkerError(Exception):
    """Unpickling it writes ``marker``: proves whether a side unpickled it."""

    def __init__(self, marker: str, message: str):
        super().__init__(marker, message)
        self.marker = marker
        self.message = message

    def __reduce__(self):
        return (_touch_and_build, (self.marker, self.message))


def raise_marker(marker: str, message: str) -> None:
    raise MarkerError(marker, message)


def sleep_s(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"
