"""Misbehaving task functions and hostile values for the bad-input and
security tests (SPEC §7).

Module level so a worker resolves them by import string
(``"tests.bad_tasks:return_lock"``) and cloudpickle pickles them by
reference. ``missing_attr`` is deliberately NOT defined here.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

# ---- results that cannot be serialized -------------------------------------------

def return_lock():
    return threading.Lock()


def return_generator():
    return (i for i in range(3))


def return_set():
    """Picklable, but not msgpack-able: refused as a result under --no-pickle."""
    return {1, 2, 3}


# ---- exceptions that cannot be pickled ---------------------------------------------

class NeedsArgsError(Exception):
    """``__init__`` takes two required args: unpickling it raises TypeError."""

    def __init__(self, code, detail):
        super().__init__(f"code {code}: {detail}")
        self.code = code
        self.detail = detail


class LockHoldingError(Exception):
    """Holds a lock: pickling it raises TypeError."""

    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


class BadStrError(Exception):
    """``str(exc)`` itself raises."""

    def __str__(self):
        raise RuntimeError("__str__ exploded")

    def __repr__(self):
        raise RuntimeError("__repr__ exploded")


def raise_needs_args():
    raise NeedsArgsError(42, "needs two args")


def raise_lock_holding():
    raise LockHoldingError("holding a lock")


def raise_bad_str():
    raise BadStrError("hidden")


async def async_raise_lock_holding():
    raise LockHoldingError("holding a lock, async")


# ---- interpreter-exit exceptions inside a task ----------------------------------------

def call_sys_exit(code=3):
    sys.exit(code)


def raise_keyboard_interrupt():
    raise KeyboardInterrupt("ctrl-c inside a task")


def raise_system_exit():
    raise SystemExit("system exit inside a task")


async def async_sys_exit(code=3):
    sys.exit(code)


async def async_keyboard_interrupt():
    raise KeyboardInterrupt("ctrl-c inside a coroutine task")


# ---- values whose unpickling has a side effect -----------------------------------------

def touch(path):
    """Creates ``path``; called by pickle when a TouchOnUnpickle is loaded."""
    Path(path).touch()
    return str(path)


class TouchOnUnpickle:
    """Pickles as ``touch(path)``: merely unpickling it creates the marker file,
    so a test can prove a payload was (or was never) unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (touch, (self.path,))


class ExitOnUnpickle:
    """Pickles as ``sys.exit(5)``: unpickling it raises SystemExit."""

    def __reduce__(self):
        return (sys.exit, (5,))


class RaiseOnUnpickle:
    """Pickles as ``int('not a number')``: unpickling raises ValueError."""

    def __reduce__(self):
        return (int, ("not a number",))


def first_arg_type(value, *rest):
    return type(value).__name__


# ---- objects whose own code raises interpreter-exit exceptions (issue 8) ---------------

class ExitOnPickle:
    """``pickle.dumps`` of it raises SystemExit (from ``__reduce__``)."""

    def __reduce__(self):
        raise SystemExit(7)


class InterruptOnPickle:
    """``pickle.dumps`` of it raises KeyboardInterrupt (from ``__reduce__``)."""

    def __reduce__(self):
        raise KeyboardInterrupt("ctrl-c while pickling")


class ExitOnStrError(Exception):
    """Describing it (``str``, ``repr``) raises SystemExit."""

    def __str__(self):
        raise SystemExit(9)

    def __repr__(self):
        raise SystemExit(9)


def return_exit_on_pickle():
    return ExitOnPickle()


def return_interrupt_on_pickle():
    return InterruptOnPickle()


async def async_return_exit_on_pickle():
    return ExitOnPickle()


def raise_exit_on_str():
    raise ExitOnStrError()


async def async_raise_exit_on_str():
    raise ExitOnStrError()


def return_bytes(n):
    return b"\0" * n


def raise_huge_message(n):
    raise ValueError("x" * n)
