"""Selective retries: ``retry_on`` and ``retry_jitter`` (README *Selective retries and jitter*).

The producer turns ``retry_on`` into qualified class names
(``"module.QualName"``) before anything is stored. The worker puts the
qualified names of the failing exception's classes (its MRO) into the
TaskError record it writes, from whatever process raised it (a process
child included), and draws a jitter factor for every failure report.
``report.lua`` decides: a failure is retried only when one of those names is
listed (so subclasses match, and no worker imports anything), and the delay
is scaled by the factor when the task asked for jitter. The rule lives in
that one script, next to the rest of the retry rules.
"""

from __future__ import annotations

import builtins
import functools
import importlib
import random
import re
from typing import Any, Iterable

JITTER_LOW, JITTER_HIGH = 0.5, 1.5
_NAME = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")


class InvalidRetryOnError(TypeError, ValueError):
    """``retry_on`` names something that is not an exception class. Both a
    TypeError (it is the wrong kind of object) and a ValueError (a bad option
    value), so callers catching either see it."""


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def exception_names(exc: BaseException) -> list[str]:
    """The qualified names of the classes ``exc`` is an instance of."""
    return [qualified_name(c) for c in type(exc).__mro__ if c is not object]


def jitter_factor() -> float:
    """Drawn on the worker (Lua's math.random is not for this)."""
    return random.uniform(JITTER_LOW, JITTER_HIGH)


def _check_class(value: Any, shown: str) -> str:
    if not (isinstance(value, type) and issubclass(value, BaseException)):
        raise InvalidRetryOnError(f"retry_on: {shown} is not an exception class")
    return qualified_name(value)


@functools.lru_cache(maxsize=256)
def _resolve_name(name: str) -> str:
    """Canonical name of a ``module.QualName`` string. Where the producer can
    import the module, the name must be an exception class there (and is
    rewritten to where the class is defined: ``taskmesh.TaskTimeoutError``
    -> ``taskmesh.exceptions.TaskTimeoutError``); a module only workers have
    is taken on trust."""
    if "." not in name:
        if isinstance(getattr(builtins, name, None), type):  # "ValueError"
            return _check_class(getattr(builtins, name), repr(name))
        raise ValueError(f"retry_on: {name!r} is not a qualified name like 'module.ClassName'")
    if not _NAME.match(name):
        raise ValueError(f"retry_on: {name!r} is not a qualified name like 'module.ClassName'")
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        except Exception:
            return name  # the module does not import here: a worker's business
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                raise ValueError(f"retry_on: {name!r}: {'.'.join(parts[:cut])} has no "
                                 f"{'.'.join(parts[cut:])}")
            obj = getattr(obj, attr)
        return _check_class(obj, repr(name))
    return name


def normalize_retry_on(retry_on: Any) -> list[str] | None:
    """None (retry every failure) or the sorted qualified names to retry on."""
    if retry_on is None:
        return None
    items: Iterable[Any]
    if isinstance(retry_on, (str, type)):
        items = (retry_on,)
    elif isinstance(retry_on, (tuple, list, set, frozenset)):
        items = retry_on
    else:
        raise TypeError("retry_on must be an exception class, a qualified name, or a tuple "
                        f"of them, not {type(retry_on).__name__}")
    names = set()
    for item in items:
        if isinstance(item, str):
            names.add(_resolve_name(item))
        else:
            names.add(_check_class(item, repr(item)))
    return sorted(names)
