"""The dashboard's JSON API, SSE stream and auth (SPEC §15, §17), against a
real ``taskmesh dashboard`` process, the suite's private redis-server and
real worker processes."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from typing import Any, Iterator

import cloudpickle
import httpx
import pytest

from taskmesh import TaskInfo, TaskManager, TaskStatus
from taskmesh.dashboard.auth import COOKIE_NAME, session_cookie_value
from taskmesh.dashboard.display import describe_pickle, payload_view, result_view
from taskmesh.serialization import Codec
from tests import dashboard_tasks, tasks
from tests.conftest import RedisServer, _free_port, namespace_keys
from tests.dashboard_helpers import DashboardProcess, sse_events
from tests.helpers import ids_in, wait_until

TASKINFO_FIELDS = [f.name for f in dataclasses.fields(TaskInfo)]


@pytest.fixture
def http(dash: DashboardProcess) -> Iterator[httpx.Client]:
    with dash.client() as client:
        yield client


def run_burst(worker_factory, dash_ns: str) -> None:
    w = worker_factory("--burst", namespace=dash_ns)
    assert w.wait(30) == 0, w.log()


# ---- metrics and one task -------------------------------------------------------------
def test_metrics_is_get_metrics(http, dtm):
    dtm.register_task(tasks.add, 1, 2, defer=True)
    body = http.get("/api/metrics").json()
    expected = dtm.get_metrics()
    assert set(body) == set(expected)
    assert body["namespace"] == dtm.namespace
    assert body["tasks"]["pending"] == expected["tasks"]["pending"] >= 1
    assert body["totals"]["registered"] == expected["totals"]["registered"]


def test_task_has_every_taskinfo_field_and_display_strings(http, dtm):
    parent = dtm.register_task(tasks.add, 0, 0, defer=True)
    tid = dtm.register_task("tests.tasks:add", 1, (2, "x"), kwargs={"k": [1, 2]},
                            dependencies=[parent], tags=["red"], metadata={"m": 1},
                            description="about", priority=12, queue="dq")
    resp = http.get(f"/api/tasks/{tid}")
    assert resp.status_code == 200
    body = resp.json()
    info = dtm.get_task(tid)
    for name in TASKINFO_FIELDS:
        assert name in body, name
    assert body["id"] == tid and body["status"] == "waiting" == str(info.status)
    assert body["priority"] == 12 and body["queue"] == "dq" and body["tags"] == ["red"]
    assert body["metadata"] == {"m": 1} and body["dependencies"] == [parent]
    assert body["created_at"] == info.created_at and body["description"] == "about"
    assert body["func"] == "tests.tasks:add"
    assert body["args"] == "(1, (2, 'x'))"
    assert body["kwargs"] == "{'k': [1, 2]}"
    assert body["result"] is None
    assert http.get(f"/api/tasks/{parent}").json()["dependents"] == [tid]


def test_a_finished_task_still_lists_its_dependents(http, dtm, rds, worker_factory, dash_ns):
    """The dependents set empties as the outcome resolves them; the record
    keeps their ids, so a finished task still lists them, a wide fan-out
    (resolved over several script calls) in full, a failed task the
    dependents it cancelled, and nothing is left behind the record."""
    parent = dtm.register_task(tasks.add, 1, 1)
    kids = dtm.register_many(tasks.add, [(i, 1) for i in range(250)], dependencies=[parent])
    doomed = dtm.register_task(tasks.fail, "boom")
    orphan = dtm.register_task(tasks.add, 0, 0, dependencies=[doomed])
    grandchild = dtm.register_task(tasks.add, 0, 0, dependencies=[orphan])
    assert http.get(f"/api/tasks/{orphan}").json()["dependents"] == [grandchild]
    run_burst(worker_factory, dash_ns)

    assert dtm.get_task_status(parent) is TaskStatus.COMPLETED
    assert all(dtm.get_task_status(k) is TaskStatus.COMPLETED for k in kids)
    assert rds.scard(dtm.keys.dependents(parent)) == 0
    assert http.get(f"/api/tasks/{parent}").json()["dependents"] == sorted(kids)
    assert http.get(f"/api/tasks/{doomed}").json()["dependents"] == [orphan]
    assert dtm.get_task_status(grandchild) is TaskStatus.CANCELLED
    assert http.get(f"/api/tasks/{orphan}").json()["dependents"] == [grandchild]
    assert http.get(f"/api/tasks/{kids[0]}").json()["dependents"] == []
    # What is kept lives in the record: it expires with it.
    assert namespace_keys(rds, dash_ns, f"*{parent}*") == [dtm.keys.task(parent).encode()]


def test_dependents_in_other_shards_are_listed_before_and_after(redis_server, worker_factory,
                                                               namespace, tmp_path):
    """In a sharded namespace a task's dependents in other shards are in its
    remote_dependents set until its outcome goes to their shards' outboxes;
    the page lists them before and after, like those in its own shard."""
    with TaskManager(redis_server.url, namespace=namespace, shards=3) as tm:
        (parent,) = ids_in(1, 3, f"{namespace}-p")
        tm.register_task(tasks.add, 1, 1, task_id=parent, defer=True)
        kids = [tm.register_task(tasks.add, 2, 2, task_id=kid, dependencies=[parent])
                for shard in range(3) for kid in ids_in(shard, 3, f"{namespace}-k", n=2)]
        with DashboardProcess(redis_server.url, namespace,
                              logpath=tmp_path / "dash.log") as proc, proc.client() as c:
            assert c.get(f"/api/tasks/{parent}").json()["dependents"] == sorted(kids)
            tm.execute_task_sync(parent)
            run_burst(worker_factory, namespace)
            assert all(tm.get_task_status(k) is TaskStatus.COMPLETED for k in kids)
            assert c.get(f"/api/tasks/{parent}").json()["dependents"] == sorted(kids)


def test_unknown_task_is_404_everywhere(http):
    for method, path in [("GET", "/api/tasks/nope"), ("POST", "/api/tasks/nope/cancel")]:
        resp = http.request(method, path)
        assert resp.status_code == 404, path
        assert "error" in resp.json()
    assert http.get("/tasks/nope").status_code == 404


def test_completed_task_shows_result(http, dtm, worker_factory, dash_ns):
    tid = dtm.register_task(tasks.echo, 3, 4, kwargs={"z": None})
    run_burst(worker_factory, dash_ns)
    body = http.get(f"/api/tasks/{tid}").json()
    assert body["status"] == "completed"
    assert body["result"] == repr(dtm.get_task_result(tid))


def test_failed_task_shows_error_with_traceback(http, dtm, worker_factory, dash_ns):
    tid = dtm.register_task(tasks.fail, "it broke")
    run_burst(worker_factory, dash_ns)
    body = http.get(f"/api/tasks/{tid}").json()
    assert body["status"] == "failed"
    assert body["error"]["type"] == "ValueError" and body["error"]["message"] == "it broke"
    assert "Traceback" in body["error"]["traceback"]
    page = http.get(f"/tasks/{tid}").text
    assert "it broke" in page and "Traceback (most recent call last)" in page
    timeline = page[page.index('id="timeline"'):]
    order = [timeline.index(t) for t in ("TASK_CREATED", "TASK_STARTED", "TASK_FAILED")]
    assert order == sorted(order)


def test_timeline_shows_the_end_of_a_task_buried_in_a_busy_stream(http, dtm):
    tid = dtm.register_task(tasks.add, 1, 2, defer=True)
    dtm.register_many(tasks.add, range(3500), defer=True)  # 3,500 events after it
    dtm.cancel_task_sync(tid)
    timeline = http.get(f"/tasks/{tid}").text.split('id="timeline"')[1]
    assert "TASK_CREATED" in timeline and "TASK_CANCELLED" in timeline


# ---- never unpickled ----------------------------------------------------------------------
def test_pickled_values_are_never_unpickled(http, dtm, worker_factory, dash_ns, tmp_path):
    arg_marker = tmp_path / "arg-unpickled"
    result_marker = tmp_path / "result-unpickled"
    evil = dashboard_tasks.Malicious(str(arg_marker))
    size = len(cloudpickle.dumps(evil))
    # Deferred: no worker unpickles the argument; only the dashboard could.
    deferred = dtm.register_task(tasks.echo, 1, evil, kwargs={"e": evil}, defer=True)
    produced = dtm.register_task(dashboard_tasks.make_malicious, str(result_marker))
    run_burst(worker_factory, dash_ns)
    assert dtm.get_task_status(produced) is TaskStatus.COMPLETED

    body = http.get(f"/api/tasks/{deferred}").json()
    assert body["args"] == f"(1, <pickled, {size} bytes>)"
    assert body["kwargs"] == f"{{'e': <pickled, {size} bytes>}}"
    assert body["func"] == "tests.tasks.echo"  # pickled by reference: name read from opcodes
    result = http.get(f"/api/tasks/{produced}").json()["result"]
    result_size = len(cloudpickle.dumps(dashboard_tasks.Malicious(str(result_marker))))
    assert result == f"<pickled, {result_size} bytes>"
    for path in (f"/tasks/{deferred}", f"/tasks/{produced}", "/events"):
        assert http.get(path).status_code == 200
    assert not arg_marker.exists() and not result_marker.exists()
    # The markers do work: unpickling really runs them.
    cloudpickle.loads(cloudpickle.dumps(evil))
    assert arg_marker.exists()


def test_display_of_pickled_functions_without_unpickling():
    codec = Codec()

    def local_fn(x):
        return x

    by_value = payload_view(codec.encode_task(local_fn, (), {}))
    assert by_value.func.endswith("local_fn")
    by_ref = payload_view(codec.encode_task(tasks.add, (tasks.fail,), {}))
    assert by_ref.func == "tests.tasks.add" and by_ref.args == "(tests.tasks.fail,)"
    junk = b"\x80\x05not a pickle"
    assert repr(describe_pickle(junk)) == f"<pickled, {len(junk)} bytes>"
    anonymous = describe_pickle(cloudpickle.dumps(lambda: 1).replace(b"__qualname__", b"__xualname__"))
    assert repr(anonymous).startswith("<pickled function, ")
    assert result_view(codec.encode_result({"a": (1, 2)})) == "{'a': (1, 2)}"
    assert result_view(None) is None


# ---- actions ---------------------------------------------------------------------------------
def test_cancel(http, dtm):
    tid = dtm.register_task(tasks.add, 1, 2, defer=True)
    resp = http.post(f"/api/tasks/{tid}/cancel")
    assert resp.status_code == 200 and resp.json() == {"cancelled": True}
    assert dtm.get_task_status(tid) is TaskStatus.CANCELLED
    again = http.post(f"/api/tasks/{tid}/cancel")  # terminal: 200, nothing changes
    assert again.status_code == 200 and again.json() == {"cancelled": False}


def test_actions_refuse_cross_site_requests(http, dtm, dash):
    tid = dtm.register_task(tasks.add, 1, 2, defer=True)
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        resp = http.post(f"/api/tasks/{tid}/cancel", headers=headers)
        assert resp.status_code == 403 and "cross-site" in resp.json()["error"]
    assert dtm.get_task_status(tid) is TaskStatus.PENDING
    same = http.post(f"/api/tasks/{tid}/cancel", headers={"Origin": dash.base_url})
    assert same.status_code == 200 and same.json() == {"cancelled": True}


def test_retry(http, dtm, worker_factory, dash_ns):
    failed = dtm.register_task(tasks.fail, "x")
    pending = dtm.register_task(tasks.add, 1, 2, defer=True)
    run_burst(worker_factory, dash_ns)
    resp = http.post(f"/api/tasks/{failed}/retry")
    assert resp.status_code == 200
    new_id = resp.json()["task_id"]
    assert new_id != failed and dtm.get_task(new_id).metadata["retry_of"] == failed
    conflict = http.post(f"/api/tasks/{pending}/retry")
    assert conflict.status_code == 409 and "error" in conflict.json()
    assert dtm.get_task_status(pending) is TaskStatus.PENDING
    unknown = http.post("/api/tasks/nope/retry")
    assert unknown.status_code == 404 and "error" in unknown.json()


# ---- listing ------------------------------------------------------------------------------------
def test_list_tasks_filters_and_pages(http, dtm):
    tag = f"tag{uuid.uuid4().hex[:6]}"
    ids = [dtm.register_task(tasks.add, i, i, defer=True, tags=[tag], queue="lq")
           for i in range(5)]
    dtm.cancel_task_sync(ids[0])
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"tag": tag, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        body = http.get("/api/tasks", params=params).json()
        assert set(body) == {"tasks", "cursor"}
        for t in body["tasks"]:
            assert set(TASKINFO_FIELDS) <= set(t)
        seen += [t["id"] for t in body["tasks"]]
        cursor = body["cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids)
    both = http.get("/api/tasks", params=[("status", "pending"), ("status", "cancelled"),
                                          ("tag", tag)]).json()["tasks"]
    assert sorted(t["id"] for t in both) == sorted(ids)
    only = http.get("/api/tasks", params={"status": "cancelled", "tag": tag}).json()["tasks"]
    assert [t["id"] for t in only] == [ids[0]]
    by_queue = http.get("/api/tasks", params={"queue": "lq", "limit": 1000}).json()["tasks"]
    assert set(ids) <= {t["id"] for t in by_queue}
    assert all(t["queue"] == "lq" for t in by_queue)


@pytest.mark.parametrize("params", [{"limit": "abc"}, {"limit": "0"}, {"limit": "1001"},
                                    {"status": "bogus"}, {"status": "QUEUED "},
                                    {"cursor": "!!not-a-cursor!!"}])
def test_list_tasks_bad_input_is_400(http, params):
    resp = http.get("/api/tasks", params=params)
    assert resp.status_code == 400
    assert isinstance(resp.json()["error"], str) and resp.json()["error"]


# ---- server-sent events --------------------------------------------------------------------------
def test_sse_starts_live_without_history(dash, dtm):
    before = dtm.register_task(tasks.add, 0, 0, defer=True)
    with httpx.Client(base_url=dash.base_url, timeout=10) as client:
        with client.stream("GET", "/api/events") as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            after = dtm.register_task(tasks.add, 1, 1, defer=True)
            first = next(sse_events(resp))
    assert first["event"] == "TASK_CREATED" and first["data"]["task_id"] == after != before
    assert first["id"] == first["data"]["id"]
    assert set(first["data"]) == {"type", "task_id", "timestamp", "data", "id"}
    assert first["data"]["type"] == first["event"]
    assert first["data"]["data"]["status"] == "pending"


def test_sse_resumes_after_last_event_id_without_gaps_or_duplicates(dash, dtm):
    """Replay and live join exactly even while events keep arriving."""
    anchor = dtm.get_events(since=None, count=1)
    since = anchor[-1].id if anchor else "0-0"
    total = 300
    names = [f"burst-{i}" for i in range(total)]
    before, during = names[:total // 2], names[total // 2:]
    started = threading.Event()

    def produce() -> None:
        started.wait(10)
        for name in during:
            dtm.register_task(tasks.add, 1, 1, defer=True, name=name)

    for name in before:  # these are replayed...
        dtm.register_task(tasks.add, 1, 1, defer=True, name=name)
    # ...and these arrive while the replay is being read and after it.
    producer = threading.Thread(target=produce)
    producer.start()
    received: list[str] = []
    try:
        with httpx.Client(base_url=dash.base_url, timeout=10) as client:
            with client.stream("GET", "/api/events", headers={"Last-Event-ID": since}) as resp:
                assert resp.status_code == 200
                started.set()
                for message in sse_events(resp):
                    received.append(message["id"])
                    if message["data"]["data"].get("name") == during[-1]:
                        break
    finally:
        started.set()
        producer.join(30)
    stored = [e.id for e in dtm.get_events(since=since, count=10_000)]
    assert received == stored[:len(received)]
    assert len(received) == len(set(received)) >= total


def test_bad_last_event_id_is_400(http):
    resp = http.get("/api/events", headers={"Last-Event-ID": "not-an-id"})
    assert resp.status_code == 400 and "error" in resp.json()


def test_one_events_subscription_per_process(dash, rds, dtm):
    def subscribers() -> int:
        # Live readers block on the events stream (XREAD); this module's only
        # reader is the dashboard's hub.
        return sum(1 for c in rds.client_list() if c.get("cmd") == "xread")

    with httpx.Client(base_url=dash.base_url, timeout=10) as client:
        streams = [client.stream("GET", "/api/events") for _ in range(3)]
        responses = [s.__enter__() for s in streams]
        try:
            assert all(r.status_code == 200 for r in responses)
            tid = dtm.register_task(tasks.add, 2, 2, defer=True)
            for r in responses:  # every client gets the event...
                assert next(sse_events(r))["data"]["task_id"] == tid
            assert subscribers() == 1  # ...through one subscription
        finally:
            for s in streams:
                s.__exit__(None, None, None)


# ---- auth and read-only ---------------------------------------------------------------------------
def test_token_auth(redis_server, dash_ns, tmp_path, dtm):
    tid = dtm.register_task(tasks.add, 1, 2, defer=True)
    first = DashboardProcess(redis_server.url, dash_ns, "--token", "s3cret",
                             logpath=tmp_path / "a.log", env={"TASKMESH_DASHBOARD_TOKEN": "envtok"})
    try:
        with first.client() as c:
            for path in ("/", "/tasks", f"/tasks/{tid}", "/events", "/api/metrics",
                         f"/api/tasks/{tid}", "/api/events"):
                assert c.get(path).status_code == 401, path
            assert c.post(f"/api/tasks/{tid}/cancel").status_code == 401
            assert c.get("/api/metrics").json()["error"]
            assert c.get("/static/dashboard.js").status_code == 200  # assets are public
            good = {"Authorization": "Bearer s3cret"}
            assert c.get("/api/metrics", headers=good).status_code == 200
            assert c.get(f"/tasks/{tid}", headers=good).status_code == 200
            assert c.get("/api/metrics", headers={"Authorization": "Bearer envtok"}).status_code == 401
            assert c.get("/api/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
            assert c.get("/?token=wrong").status_code == 401
            login = c.get("/?token=s3cret")
            assert login.status_code == 303 and login.headers["location"] == "/"
            cookie = login.cookies[COOKIE_NAME]
            assert cookie == session_cookie_value("s3cret") and "s3cret" not in cookie
        with first.client(cookies={COOKIE_NAME: cookie}) as c:
            assert c.get("/api/metrics").status_code == 200
            assert c.get("/").status_code == 200
        with first.client(cookies={COOKIE_NAME: "forged"}) as c:
            assert c.get("/").status_code == 401
    finally:
        first.stop()
    # A restarted dashboard with the same token accepts the same cookie.
    second = DashboardProcess(redis_server.url, dash_ns, logpath=tmp_path / "b.log",
                              env={"TASKMESH_DASHBOARD_TOKEN": "s3cret"})
    try:
        with second.client(cookies={COOKIE_NAME: cookie}) as c:
            assert c.get("/api/metrics").status_code == 200
        with second.client() as c:
            assert c.get("/api/metrics").status_code == 401
    finally:
        second.stop()


def test_read_only(redis_server, dash_ns, tmp_path, dtm, worker_factory):
    failed = dtm.register_task(tasks.fail, "x")
    run_burst(worker_factory, dash_ns)
    pending = dtm.register_task(tasks.add, 1, 2, defer=True)
    proc = DashboardProcess(redis_server.url, dash_ns, "--read-only", "--token", "tok",
                            logpath=tmp_path / "ro.log")
    try:
        with proc.client() as c:
            assert c.post(f"/api/tasks/{pending}/cancel").status_code == 401
            auth = {"Authorization": "Bearer tok"}
            for tid, action in ((pending, "cancel"), (failed, "retry")):
                resp = c.post(f"/api/tasks/{tid}/{action}", headers=auth)
                assert resp.status_code == 403 and "error" in resp.json()
            assert dtm.get_task_status(pending) is TaskStatus.PENDING
            for tid in (pending, failed):
                page = c.get(f"/tasks/{tid}", headers=auth).text
                assert ">Cancel</button>" not in page and ">Retry</button>" not in page
    finally:
        proc.stop()


def test_buttons_follow_status(http, dtm, worker_factory, dash_ns):
    failed = dtm.register_task(tasks.fail, "x")
    done = dtm.register_task(tasks.add, 1, 2)
    run_burst(worker_factory, dash_ns)
    pending = dtm.register_task(tasks.add, 1, 2, defer=True)
    pages = {tid: http.get(f"/tasks/{tid}").text for tid in (failed, done, pending)}
    assert ">Retry</button>" in pages[failed] and ">Cancel</button>" not in pages[failed]
    assert ">Retry</button>" not in pages[done] and ">Cancel</button>" not in pages[done]
    assert ">Cancel</button>" in pages[pending] and ">Retry</button>" not in pages[pending]


def test_binds_loopback_by_default(dash):
    assert f"Uvicorn running on http://127.0.0.1:{dash.port}" in dash.log()


# ---- Redis outage ------------------------------------------------------------------------------------
def test_redis_down_gives_503_and_a_banner_then_recovers(tmp_path):
    server = RedisServer(appendonly=True).start()
    proc = None
    try:
        proc = DashboardProcess(server.url, "outage", logpath=tmp_path / "dash.log")
        tm = TaskManager(server.url, namespace="outage")
        tid = tm.register_task(tasks.add, 1, 2, defer=True)
        with proc.client() as c:
            assert c.get("/api/metrics").status_code == 200
            server.stop()
            down = c.get("/api/metrics")
            assert down.status_code == 503 and "Redis" in down.json()["error"]
            assert c.get(f"/api/tasks/{tid}").status_code == 503
            for path in ("/", f"/tasks/{tid}", "/events"):
                page = c.get(path)
                assert page.status_code == 503, path
                assert 'id="banner"' in page.text and "Redis is unavailable" in page.text
                assert "Traceback" not in page.text
            server.start()
            wait_until(lambda: c.get("/api/metrics").status_code == 200, timeout=15,
                       what="dashboard to recover")
            assert c.get(f"/api/tasks/{tid}").json()["status"] == "pending"
            assert "Redis is unavailable" not in c.get("/").text
        tm.close()
    finally:
        if proc is not None:
            proc.stop()
        server.cleanup()


def test_starts_while_redis_is_down_and_catches_up(tmp_path):
    server = RedisServer(port=_free_port())
    proc = DashboardProcess(server.url, "late", logpath=tmp_path / "dash.log")
    try:
        with proc.client() as c:
            assert c.get("/api/metrics").status_code == 503
            assert "Redis is unavailable" in c.get("/").text
            server.start()
            wait_until(lambda: c.get("/api/metrics").status_code == 200, timeout=15,
                       what="dashboard to reach Redis")
            with TaskManager(server.url, namespace="late") as tm:
                with c.stream("GET", "/api/events") as resp:
                    tid = tm.register_task(tasks.add, 1, 1, defer=True)
                    assert next(sse_events(resp))["data"]["task_id"] == tid
    finally:
        proc.stop()
        server.cleanup()


def test_events_published_during_an_outage_reach_sse_clients(tmp_path):
    """The hub reads the events stream from where it was before Redis went
    away, so an SSE client still connected gets what happened meanwhile; a
    browser that reconnects with Last-Event-ID replays it as well."""
    server = RedisServer(appendonly=True).start()
    proc = None
    try:
        proc = DashboardProcess(server.url, "gap", logpath=tmp_path / "dash.log")
        tm = TaskManager(server.url, namespace="gap")
        with httpx.Client(base_url=proc.base_url, timeout=20) as c:
            with c.stream("GET", "/api/events") as resp:
                messages = sse_events(resp)
                tm.register_task(tasks.add, 1, 1, defer=True)
                last_id = next(messages)["id"]
                server.stop()
                server.start()
                during = tm.register_task(tasks.add, 2, 2, defer=True)
                assert next(messages)["data"]["task_id"] == during
            with c.stream("GET", "/api/events", headers={"Last-Event-ID": last_id}) as resp:
                resumed = next(sse_events(resp))
            assert resumed["data"]["task_id"] == during and resumed["event"] == "TASK_CREATED"
        tm.close()
    finally:
        if proc is not None:
            proc.stop()
        server.cleanup()


def test_cli_refuses_a_bad_namespace_without_a_traceback():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "taskmesh", "dashboard", "--namespace", "a b",
                          "--port", "0"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "namespace" in out.stderr and "Traceback" not in out.stderr
