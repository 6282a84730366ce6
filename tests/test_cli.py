"""The CLI commands print what they claim."""

from __future__ import annotations

import json
import subprocess
import sys

from tests import semantics_tasks as st
from tests.conftest import REPO_ROOT


def _cli(*args, timeout=30, **kw):
    return subprocess.run([sys.executable, "-m", "taskmesh", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout, **kw)


def test_metrics_json_prometheus_and_table(tm, redis_server, namespace):
    tm.register_task(st.noop, priority=10)
    common = ["--url", redis_server.url, "--namespace", namespace]
    out = _cli("metrics", "--json", *common)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["tasks"]["queued"] == 1 and data["queues"]["default"]["by_priority"] == {"10": 1}
    prom = _cli("metrics", "--prometheus", *common)
    assert prom.returncode == 0, prom.stderr
    assert "# TYPE taskmesh_tasks gauge" in prom.stdout
    assert f'taskmesh_queue_depth{{namespace="{namespace}",priority="10",queue="default"}} 1.0' \
        in prom.stdout
    table = _cli("metrics", *common, env={"COLUMNS": "100", "PATH": ""})
    assert table.returncode == 0, table.stderr
    assert "queues by priority" in table.stdout and "queued 1" in table.stdout


def test_inspect_and_events(tm, redis_server, namespace):
    t = tm.register_task(st.noop, name="inspected", tags=["x"], defer=True)
    common = ["--url", redis_server.url, "--namespace", namespace]
    out = _cli("inspect", t, *common, env={"COLUMNS": "120", "PATH": ""})
    assert out.returncode == 0, out.stderr
    assert "inspected" in out.stdout and "pending" in out.stdout
    missing = _cli("inspect", "nope", *common)
    assert missing.returncode != 0 and "does not exist" in missing.stderr
    proc = subprocess.Popen([sys.executable, "-m", "taskmesh", "events", "--since", "0", *common],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
    finally:
        proc.terminate()
        proc.wait(10)
    assert "TASK_CREATED" in line and t in line


def test_worker_rejects_bad_flags():
    out = _cli("worker", "--concurrency", "0")
    assert out.returncode == 2


def test_metrics_watch_refreshes_until_interrupted(tm, redis_server, namespace):
    import signal
    import time

    tm.register_task(st.noop)
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskmesh", "metrics", "--watch", "0.2",
         "--url", redis_server.url, "--namespace", namespace],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={"COLUMNS": "100", "PATH": ""})
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "queues by priority" in out and "queued 1" in out
