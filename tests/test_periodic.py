"""Periodic tasks (SPEC §12, §17): schedules in Redis, ticks fired by any
running worker, one task per tick however many workers run, missed ticks
collapsed into the latest."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from taskmesh import EventType, PeriodicInfo, TaskStatus
from taskmesh import scripts
from taskmesh.periodic import PeriodicTicker, Schedule, advance_call, check_schedule
from tests.conftest import REPO_ROOT, namespace_snapshot
from tests.helpers import wait_until

RECORD = "tests.periodic_tasks:record"


def _created(tm) -> list[str]:
    """Ids of every task registered in the namespace, in order."""
    return [e.task_id for e in tm.get_events(count=10_000) if e.type is EventType.TASK_CREATED]


def _ticks(tm, name: str) -> list[int]:
    ids = _created(tm)
    pattern = re.compile(rf"periodic:{re.escape(name)}:(\d+)")
    assert all(pattern.fullmatch(i) for i in ids), ids
    return [int(pattern.fullmatch(i).group(1)) for i in ids]


def _info(tm, name: str) -> PeriodicInfo:
    return next(s for s in tm.list_periodic() if s.name == name)


def _start_workers(tm, worker_factory, n: int) -> list:
    workers = [worker_factory() for _ in range(n)]
    wait_until(lambda: len(tm.get_metrics()["workers"]) == n, timeout=30, what=f"{n} workers")
    return workers


def _assert_consecutive(ticks: list[int], first: int) -> None:
    assert len(ticks) == len(set(ticks)), f"a tick was registered twice: {ticks}"
    assert sorted(ticks) == list(range(first, first + len(ticks))), ticks


@pytest.mark.all_backends  # schedules live in shard 0, the ticks' tasks in their own shards
def test_three_workers_register_each_tick_exactly_once(tm, redis_server, rds, worker_factory,
                                                       namespace):
    _start_workers(tm, worker_factory, 3)
    key = f"{namespace}:ran"
    info = tm.add_periodic("beat", RECORD, redis_server.url, key, every=1)
    assert info.every == 1 and info.cron is None and info.last_task_id is None
    assert info.next_run_at == int(info.next_run_at) and info.next_run_at > time.time() - 0.01
    first = int(info.next_run_at)
    wait_until(lambda: (_info(tm, "beat").last_run_at or 0) >= first + 4, timeout=30,
               what="five ticks")
    assert tm.remove_periodic("beat") is True
    ticks = _ticks(tm, "beat")
    _assert_consecutive(ticks, first)
    assert len(ticks) >= 5
    for tick in ticks:  # each ran once, on time
        task_id = f"periodic:beat:{tick}"
        tm.wait_for_task_sync(task_id, timeout=20)
        assert tm.get_task(task_id).name == "beat"
        assert tick <= tm.get_task(task_id).created_at < tick + 1
    ran = [raw.decode() for raw in rds.lrange(key, 0, -1)]
    assert sorted(ran) == sorted(f"periodic:beat:{t}" for t in ticks)


def test_no_duplicate_tick_across_a_worker_kill_9(tm, redis_server, worker_factory, namespace):
    workers = _start_workers(tm, worker_factory, 3)
    info = tm.add_periodic("beat", RECORD, redis_server.url, f"{namespace}:ran", every=1)
    first = int(info.next_run_at)
    wait_until(lambda: (_info(tm, "beat").last_run_at or 0) >= first + 1, timeout=30,
               what="two ticks")
    workers[0].kill()
    workers[0].wait(10)
    killed_at = time.time()
    wait_until(lambda: (_info(tm, "beat").last_run_at or 0) >= killed_at + 3, timeout=30,
               what="three more ticks")
    tm.remove_periodic("beat")
    ticks = _ticks(tm, "beat")
    _assert_consecutive(ticks, first)
    for tick in ticks:  # none lost either: those the dead worker held are recovered
        tm.wait_for_task_sync(f"periodic:beat:{tick}", timeout=30)


def test_missed_ticks_collapse_into_the_latest(tm, redis_server, worker_factory, namespace):
    info = tm.add_periodic("beat", RECORD, redis_server.url, f"{namespace}:ran", every=1)
    first_due = int(info.next_run_at)
    wait_until(lambda: time.time() > first_due + 3.2, timeout=10, what="three missed ticks")
    assert _created(tm) == []  # no worker, no ticks
    worker_factory()
    wait_until(lambda: len(_created(tm)) >= 2, timeout=30, what="two ticks")
    tm.remove_periodic("beat")
    ticks = _ticks(tm, "beat")
    assert ticks[0] >= first_due + 3  # the missed ones were not replayed ...
    _assert_consecutive(ticks, ticks[0])  # ... only the latest fired, then each on time
    created = {e.task_id: e.timestamp for e in tm.get_events(count=1000)
               if e.type is EventType.TASK_CREATED}
    assert created[f"periodic:beat:{ticks[1]}"] >= ticks[1]


def test_ticker_fires_only_the_latest_of_several_due_cron_ticks(tm):
    """The firing logic itself, driven with a chosen 'now' (no worker)."""
    info = tm.add_periodic("hourly", "tests.tasks:add", 1, 2, cron="30 * * * *",
                           tz="Asia/Kolkata")  # UTC+05:30: minute 30 local = minute 0 UTC
    assert info.next_run_at % 3600 == 0
    ticker = PeriodicTicker(tm._client, tm.keys, tm.commands, "test")
    now = info.next_run_at + 3 * 3600 + 10  # four ticks have passed
    assert ticker.fire("hourly", now) is True
    latest = int(info.next_run_at) + 3 * 3600
    assert _created(tm) == [f"periodic:hourly:{latest}"]
    after = _info(tm, "hourly")
    assert (after.last_run_at, after.last_task_id) == (latest, f"periodic:hourly:{latest}")
    assert after.next_run_at == latest + 3600
    # A worker that read the schedule before it moved cannot advance it again
    # (compare-and-set), and firing the same tick twice creates nothing.
    stale = advance_call(tm.keys, "hourly", str(int(info.next_run_at)), latest + 7200,
                         latest, f"periodic:hourly:{latest}")
    assert scripts.run(tm._client, stale) == 0
    assert _info(tm, "hourly").next_run_at == latest + 3600
    PeriodicTicker(tm._client, tm.keys, tm.commands, "other").fire("hourly", now)
    assert _created(tm) == [f"periodic:hourly:{latest}"]
    assert tm.get_task_status(f"periodic:hourly:{latest}") is TaskStatus.QUEUED


def test_replace_keeps_last_run_and_recomputes_next(tm, redis_server, worker_factory,
                                                    namespace):
    tm.add_periodic("beat", RECORD, redis_server.url, f"{namespace}:ran", every=1)
    worker_factory()
    fired = wait_until(lambda: _info(tm, "beat").last_task_id, timeout=30, what="a tick")
    replaced = tm.add_periodic("beat", "tests.tasks:add", 1, 2, cron="0 0 1 1 *",
                               tz="Europe/Paris")
    assert (replaced.cron, replaced.every, replaced.tz) == ("0 0 1 1 *", None, "Europe/Paris")
    year = datetime.now(timezone.utc).year
    new_year_paris = next(t for t in (datetime(y, 1, 1, tzinfo=ZoneInfo("Europe/Paris"))
                                      .timestamp() for y in (year, year + 1)) if t > time.time())
    assert replaced.next_run_at == new_year_paris
    listed = _info(tm, "beat")
    assert listed.last_task_id is not None and listed.last_run_at is not None
    assert listed.next_run_at == new_year_paris
    assert fired.startswith("periodic:beat:")


def test_list_and_remove(tm):
    assert tm.list_periodic() == []
    tm.add_periodic("b-every", "tests.tasks:add", 1, 2, every=3600, priority=10, queue="q2")
    tm.add_periodic("a-cron", "tests.tasks:add", 1, 2, cron="*/15 * * * *")
    listed = tm.list_periodic()
    assert [s.name for s in listed] == ["a-cron", "b-every"]
    assert dataclasses.is_dataclass(listed[0])
    assert listed[0].cron == "*/15 * * * *" and listed[0].every is None
    assert listed[0].tz == "UTC" and listed[0].next_run_at % 900 == 0
    assert listed[1].every == 3600 and listed[1].next_run_at % 3600 == 0
    assert listed[1].last_run_at is None and listed[1].last_task_id is None
    assert tm.remove_periodic("a-cron") is True
    assert tm.remove_periodic("a-cron") is False
    assert [s.name for s in tm.list_periodic()] == ["b-every"]


def test_register_options_reach_the_tick_task(tm):
    info = tm.add_periodic("opts", "tests.tasks:add", 1, 2, every=60, priority=10, queue="q2",
                           tags=["nightly"], metadata={"k": "v"}, max_retries=2)
    ticker = PeriodicTicker(tm._client, tm.keys, tm.commands, "test")
    ticker.fire("opts", info.next_run_at + 1)
    task = tm.get_task(f"periodic:opts:{int(info.next_run_at)}")
    assert (task.name, task.priority, task.queue, task.tags, task.metadata, task.max_retries) \
        == ("opts", 10, "q2", ["nightly"], {"k": "v"}, 2)


def test_unimportable_function_fails_each_tick_not_the_worker(tm, worker_factory):
    tm.add_periodic("broken", "no_such_module_here:func", every=1)
    worker = worker_factory()
    wait_until(lambda: len(_created(tm)) >= 2, timeout=30, what="two ticks")
    tm.remove_periodic("broken")
    for task_id in _created(tm)[:2]:
        wait_until(lambda: tm.get_task_status(task_id).is_terminal, timeout=20)
        error = tm.get_task_error(task_id)
        assert tm.get_task_status(task_id) is TaskStatus.FAILED
        assert "no_such_module_here" in error.message
    assert worker.returncode is None


def test_cli_periodic_list_and_remove(tm, redis_server, namespace):
    tm.add_periodic("nightly-report", "tests.tasks:add", 1, 2, cron="0 3 * * *",
                    tz="Europe/Paris")
    common = ["--url", redis_server.url, "--namespace", namespace]

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "taskmesh", "periodic", *args, *common],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)

    out = cli("list")
    assert out.returncode == 0, out.stderr
    assert "nightly-report" in out.stdout and "cron 0 3 * * *" in out.stdout
    assert "Europe/Paris" in out.stdout
    as_json = json.loads(cli("list", "--json").stdout)
    assert as_json[0]["name"] == "nightly-report" and as_json[0]["every"] is None
    removed = cli("remove", "nightly-report")
    assert removed.returncode == 0 and "nightly-report" in removed.stdout
    assert tm.list_periodic() == []
    missing = cli("remove", "nightly-report")
    assert missing.returncode != 0 and "nightly-report" in missing.stderr
    assert "no periodic schedules" in cli("list").stdout


@pytest.mark.parametrize("timing, named", [
    ({"cron": "not a cron"}, "cron"),
    ({"cron": "61 * * * *"}, "cron"),
    ({"cron": "* * * * * *"}, "cron"),
    ({"cron": "0 0 30 2 *"}, "cron"),
    ({"cron": 5}, "cron"),
    ({"every": 0}, "every"),
    ({"every": -10}, "every"),
    ({"every": 1.5}, "every"),
    ({"every": "10"}, "every"),
    ({"every": True}, "every"),
    ({"every": 10, "tz": "Mars/Olympus_Mons"}, "tz"),
    ({"cron": "* * * * *", "tz": ""}, "tz"),
    ({"every": 10, "cron": "* * * * *"}, "cron"),
    ({}, "every"),
])
def test_bad_schedule_raises_value_error_naming_it(tm, rds, namespace, timing, named):
    tm.register_task("tests.tasks:add", 1, 2, defer=True)  # the namespace exists
    before = namespace_snapshot(rds, namespace)
    with pytest.raises(ValueError) as excinfo:
        tm.add_periodic("bad", "tests.tasks:add", 1, 2, **timing)
    assert named in str(excinfo.value)
    assert namespace_snapshot(rds, namespace) == before


@pytest.mark.parametrize("options, exc_type", [
    ({"task_id": "x"}, TypeError),
    ({"dependencies": ["x"]}, TypeError),
    ({"delay": 5}, TypeError),
    ({"priority": 300}, ValueError),
    ({"no_such_option": 1}, TypeError),
])
def test_bad_register_options_store_nothing(tm, rds, namespace, options, exc_type):
    tm.register_task("tests.tasks:add", 1, 2, defer=True)
    before = namespace_snapshot(rds, namespace)
    with pytest.raises(exc_type):
        tm.add_periodic("bad", "tests.tasks:add", every=5, **options)
    with pytest.raises(ValueError):
        tm.add_periodic("", "tests.tasks:add", every=5)
    assert namespace_snapshot(rds, namespace) == before


def test_tick_arithmetic():
    every = check_schedule(None, 300, "UTC")
    assert every.next_after(1000) == 1200 and every.next_after(1200) == 1500
    assert every.latest_at(1199.9) == 900 and every.latest_at(1200) == 1200
    assert check_schedule(None, 2.0, "UTC").every == 2
    paris = Schedule("0 9 * * *", None, "Europe/Paris")
    summer = datetime(2026, 6, 1, tzinfo=timezone.utc).timestamp()
    assert paris.next_after(summer) == summer + 7 * 3600  # 09:00 CEST is 07:00 UTC
    winter = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
    assert paris.next_after(winter) == winter + 8 * 3600  # 09:00 CET is 08:00 UTC
    assert paris.latest_at(winter + 8 * 3600) == winter + 8 * 3600
    assert paris.latest_at(winter + 8 * 3600 - 0.5) == winter + 8 * 3600 - 86400
