"""Reliability and security defects found by an independent attack (issue 8).

Each test here failed before its fix. They run against the suite's private
redis-server and real ``taskmesh worker`` processes (tests/conftest.py).
"""

from __future__ import annotations

import pytest

from taskmesh import SerializationError, TaskStatus
from tests import bad_tasks, tasks
from tests.conftest import namespace_snapshot

WAIT = 20.0


# ---- 17: registration catches everything, stores nothing ------------------------------

@pytest.mark.parametrize(
    "call, part",
    [
        (lambda tm: tm.register_task(tasks.echo, bad_tasks.ExitOnPickle()), "args[0]"),
        (lambda tm: tm.register_task(tasks.echo, 1, bad_tasks.InterruptOnPickle()), "args[1]"),
        (lambda tm: tm.register_task(tasks.echo, kwargs={"x": bad_tasks.ExitOnPickle()}),
         "kwargs['x']"),
        (lambda tm: tm.register_many(tasks.echo, [1, bad_tasks.ExitOnPickle()]), "args[0]"),
        (lambda tm: tm.register_task(tasks.echo, 1, name="bad \udc80 name"), "name"),
        (lambda tm: tm.register_task(tasks.echo, 1, description="\udcff"), "description"),
        (lambda tm: tm.register_task(tasks.echo, 1, task_id="id-\ud800"), "task_id"),
        (lambda tm: tm.register_task(tasks.echo, 1, dependencies=["\udc80"]), "dependencies[0]"),
        (lambda tm: tm.register_task(tasks.echo, 1, metadata={"k": "\udc80"}), "metadata"),
    ],
    ids=["reduce-systemexit", "reduce-keyboardinterrupt", "kwarg-systemexit", "many",
         "surrogate-name", "surrogate-description", "surrogate-task-id",
         "surrogate-dependency", "surrogate-metadata"],
)
def test_registration_turns_everything_into_serialization_error(tm, rds, namespace, call, part):
    before = namespace_snapshot(rds, namespace)
    with pytest.raises(SerializationError) as info:
        call(tm)
    assert info.value.part == part
    assert part in str(info.value)
    assert namespace_snapshot(rds, namespace) == before


def test_surrogate_in_a_string_argument_round_trips(tm, worker_factory):
    """A lone surrogate or an int over 64 bits inside an *argument* is carried
    intact (that part alone pickled) also when func is a callable."""
    task_id = tm.register_task(tasks.echo, "a\udc80b", 2**70)
    worker_factory("--burst")
    assert tm.wait_for_task_sync(task_id, timeout=WAIT) == (("a\udc80b", 2**70), {})
    assert tm.get_task_status(task_id) is TaskStatus.COMPLETED
