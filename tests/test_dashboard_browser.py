"""The dashboard in a real headless Chromium (Debian's, driven through
Playwright's Python API with ``executable_path``; never ``playwright
install``), against a real dashboard process, the private redis-server and
real worker processes. Also takes the README's screenshots: always into the
test's tmp dir, and into docs/ when ``TASKMESH_SCREENSHOTS=1`` (so an
ordinary run leaves the work tree clean)."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from taskmesh import TaskManager, TaskStatus
from tests import dashboard_tasks, tasks
from tests.conftest import REPO_ROOT, RedisServer
from tests.dashboard_helpers import DashboardProcess
from tests.helpers import wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="Debian chromium is not installed (make test installs it)")
sync_api = pytest.importorskip("playwright.sync_api")
DOCS = REPO_ROOT / "docs"


def screenshot(page: Any, tmp_path: Path, name: str) -> None:
    """Takes the shot (so the path is exercised every run); refreshes the
    README's copy in docs/ only when asked to."""
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000  # a real rendered page, not an empty file
    if os.environ.get("TASKMESH_SCREENSHOTS") == "1":
        shutil.copyfile(shot, DOCS / name)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield instance
        instance.close()


@pytest.fixture
def page(browser, dash) -> Iterator[Any]:
    """A fresh page that records console errors and uncaught exceptions."""
    context = browser.new_context(base_url=dash.base_url, viewport={"width": 1280, "height": 860})
    pg = context.new_page()
    pg.errors = []  # type: ignore[attr-defined]
    pg.requests = []  # type: ignore[attr-defined]
    pg.on("request", lambda r: pg.requests.append(r.url))
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda exc: pg.errors.append(str(exc)))
    yield pg
    context.close()


def progress_value(pg: Any) -> float:
    return float(pg.eval_on_selector("#task-progress", "el => el.value"))


def test_overview_loads_without_console_errors(page, dash, dtm, worker_factory, dash_ns,
                                               tmp_path):
    for i in range(12):  # completions spread over a few seconds, for the chart
        dtm.register_task(dashboard_tasks.crawl, 2 + 3 * i, 0.08, priority=10 if i % 2 else 0)
    for _ in range(3):
        dtm.register_task(tasks.fail, "for the chart")
    w = worker_factory("--burst", namespace=dash_ns)
    assert w.wait(30) == 0
    dtm.register_task(tasks.add, 1, 1, queue="reports", priority=15)
    dtm.register_task(tasks.add, 1, 1, queue="reports", priority=5)
    live = worker_factory("--queues", "default", namespace=dash_ns)
    wait_until(lambda: dtm.get_metrics()["workers"], what="a live worker")
    resp = page.goto("/")
    assert resp.status == 200
    assert page.get_by_role("link", name="Tasks", exact=True).count() == 1
    assert page.get_by_role("link", name="Events", exact=True).count() == 1
    assert "12" in page.locator(".count.s-completed .n").inner_text()
    assert page.locator(".chart.ok svg rect").count() >= 1  # completions drawn
    assert page.locator(".chart.bad svg rect").count() >= 1  # failures drawn
    assert "reports" in page.locator("main").inner_text()
    # Let it refresh itself at least once, then check nothing complained.
    page.wait_for_function("() => Number(document.body.dataset.refreshes || 0) >= 1")
    assert page.locator(".count.s-completed").count() == 1
    assert page.errors == []
    # Every asset comes from the dashboard itself: nothing from a CDN.
    assert any(u.endswith("/static/dashboard.js") for u in page.requests)
    assert all(u.startswith(dash.base_url + "/") for u in page.requests), page.requests
    screenshot(page, tmp_path, "dashboard-overview.png")
    live.stop()


def test_running_task_progress_bar_moves(page, dtm, worker_factory, dash_ns, tmp_path):
    tid = dtm.register_task(dashboard_tasks.crawl, 400, 0.05, name="crawl", tags=["demo"])
    worker_factory(namespace=dash_ns)
    wait_until(lambda: dtm.get_task_status(tid) is TaskStatus.RUNNING, what="task running")
    page.goto(f"/tasks/{tid}")
    page.evaluate("window.__noReload = true")
    first = progress_value(page)
    page.wait_for_function(f"() => document.querySelector('#task-progress').value > {first} + 0.05")
    assert page.evaluate("window.__noReload") is True  # updated live, not by a reload
    assert progress_value(page) > first
    assert page.get_by_role("button", name="Cancel", exact=True).is_visible()
    screenshot(page, tmp_path, "dashboard-task.png")
    assert page.errors == []


def test_cancel_from_the_page(page, dtm, worker_factory, dash_ns):
    tid = dtm.register_task(dashboard_tasks.crawl, 400, 0.05)
    worker_factory(namespace=dash_ns)
    wait_until(lambda: dtm.get_task_status(tid) is TaskStatus.RUNNING, what="task running")
    page.goto(f"/tasks/{tid}")
    page.get_by_role("button", name="Cancel", exact=True).click()
    wait_until(lambda: dtm.get_task_status(tid) is TaskStatus.CANCELLED, what="task cancelled")
    page.locator("h1 .status.s-cancelled").wait_for()
    assert page.get_by_role("button", name="Cancel", exact=True).count() == 0
    assert page.errors == []


def test_retry_from_the_page(page, dtm, worker_factory, dash_ns):
    tid = dtm.register_task(tasks.fail, "retry me")
    w = worker_factory("--burst", namespace=dash_ns)
    assert w.wait(30) == 0
    page.goto(f"/tasks/{tid}")
    assert "retry me" in page.locator(".error-box").inner_text()
    page.get_by_role("button", name="Retry", exact=True).click()
    page.wait_for_url(lambda url: tid not in url and "/tasks/" in url)
    new_id = page.url.rsplit("/", 1)[1]
    assert dtm.get_task(new_id).metadata["retry_of"] == tid
    assert page.get_by_role("link", name=tid).count() >= 1  # links back to what it retried
    assert page.errors == []


def test_tasks_page_filters_pages_and_finds_by_id(page, dtm):
    tag = f"t{uuid.uuid4().hex[:8]}"
    ids = [dtm.register_task(tasks.add, i, i, defer=True, tags=[tag], name=f"listed-{i}")
           for i in range(30)]
    dtm.cancel_task_sync(ids[3])
    page.goto(f"/tasks?tag={tag}&limit=25")
    rows = page.locator("#tasks-table tbody tr")
    assert rows.count() == 25
    page.get_by_role("link", name="Next page").click()
    page.wait_for_url("**cursor=**")
    assert rows.count() == 5
    page.goto(f"/tasks?tag={tag}")
    page.locator("form.filters input[value=cancelled]").check()
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**status=cancelled**")
    assert rows.count() == 1 and ids[3] in rows.first.inner_text()
    page.get_by_label("Task id").fill(ids[7])
    page.get_by_role("button", name="Find").click()
    page.wait_for_url(f"**/tasks/{ids[7]}")
    assert "listed-7" in page.locator("h1").inner_text()
    assert "(7, 7)" in page.locator("table.fields").inner_text()  # args, decoded
    assert page.errors == []


def test_live_feed_shows_a_new_task_without_reload(page, dtm):
    page.goto("/events")
    page.evaluate("window.__noReload = true")
    page.locator("#feed-state", has_text="Live").wait_for()
    tid = dtm.register_task(tasks.add, 2, 3, name="fresh-in-feed")
    row = page.locator("#events-feed tbody tr", has_text=tid).first
    row.wait_for()
    assert "TASK_CREATED" in row.inner_text() and "fresh-in-feed" in row.inner_text()
    assert page.evaluate("window.__noReload") is True
    assert page.errors == []


def test_banner_while_redis_is_down_then_recovers(browser, tmp_path):
    server = RedisServer(appendonly=True).start()
    proc = None
    try:
        proc = DashboardProcess(server.url, "webout", logpath=tmp_path / "dash.log")
        context = browser.new_context(base_url=proc.base_url)
        pg = context.new_page()
        pg.goto("/")
        assert pg.locator("#banner").is_hidden()
        server.stop()
        pg.locator("#banner", has_text="Redis is unavailable").wait_for()
        assert "Traceback" not in pg.content()
        server.start()
        pg.locator("#banner").wait_for(state="hidden", timeout=15000)
        assert pg.locator(".count.s-pending").count() == 1
        context.close()
    finally:
        if proc is not None:
            proc.stop()
        server.cleanup()


def test_token_login_sets_a_cookie_that_pages_and_the_stream_use(browser, redis_server, tmp_path):
    ns = f"webtok{uuid.uuid4().hex[:8]}"
    proc = DashboardProcess(redis_server.url, ns, "--token", "let-me-in", "--read-only",
                            logpath=tmp_path / "dash.log")
    tm = TaskManager(redis_server.url, namespace=ns)
    try:
        context = browser.new_context(base_url=proc.base_url)
        pg = context.new_page()
        assert pg.goto("/").status == 401
        assert pg.goto("/?token=wrong").status == 401
        resp = pg.goto("/?token=let-me-in")
        assert resp.status == 200 and pg.url == proc.base_url + "/"
        assert "let-me-in" not in pg.url
        tid = tm.register_task(tasks.add, 1, 1, defer=True)
        assert pg.goto(f"/tasks/{tid}").status == 200
        assert pg.get_by_role("button", name="Cancel", exact=True).count() == 0  # read-only
        pg.goto("/events")
        pg.locator("#feed-state", has_text="Live").wait_for()
        fresh = tm.register_task(tasks.add, 2, 2, defer=True)
        pg.locator("#events-feed tbody tr", has_text=fresh).first.wait_for()
        context.close()
    finally:
        tm.close()
        proc.stop()
