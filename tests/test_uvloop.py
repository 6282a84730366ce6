"""``taskmesh worker --loop asyncio|uvloop|auto`` (README *Workers*): the
loop the worker process runs on: auto by default, uvloop when it is
installed (the optional ``taskmesh[uvloop]`` extra) and asyncio's otherwise; asking for it by
name when it does not is a usage error, never a silent fallback."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from click.testing import CliRunner

from taskmesh import TaskFailedError, TaskManager, TaskStatus
from taskmesh.cli import LOOPS, loop_factory, main
from taskmesh.cli import worker as worker_command
from tests.conftest import REPO_ROOT, WorkerProcess, child_env

WAIT = 20.0  # upper bound on one wait; the tests wait on states, never sleep
DROPPED_WAIT_S = 6.0  # the xfail below: short, it is expected to run out

# A `taskmesh` command in an interpreter where `import uvloop` fails, as it
# does where the extra is not installed.
WITHOUT_UVLOOP = "import sys; sys.modules['uvloop'] = None; from taskmesh.cli import main; main()"


@pytest.fixture(autouse=True)
def _no_loop_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """$TASKMESH_LOOP would override the default these tests exercise."""
    monkeypatch.delenv("TASKMESH_LOOP", raising=False)


async def loop_module() -> str:
    """The task: which library's loop it runs on ('uvloop' or 'asyncio')."""
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def test_loop_choices_and_factories() -> None:
    uvloop = pytest.importorskip("uvloop")
    assert LOOPS == ("auto", "asyncio", "uvloop")
    assert loop_factory("asyncio") is None
    assert loop_factory("uvloop") is uvloop.new_event_loop
    assert loop_factory("auto") is uvloop.new_event_loop
    with pytest.raises(ValueError, match="--loop must be one of"):
        loop_factory("trio")


def test_loop_option_parsing() -> None:
    runner = CliRunner()
    out = runner.invoke(main, ["worker", "--help"])
    assert out.exit_code == 0 and "--loop" in out.output
    option = next(p for p in worker_command.params if p.name == "loop")
    assert option.default == "auto" and option.envvar == "TASKMESH_LOOP"
    bad = runner.invoke(main, ["worker", "--loop", "trio", "--url", "memory://"])
    assert bad.exit_code == 2 and "Invalid value for '--loop'" in bad.output


@pytest.mark.parametrize("flags, expected", [
    (("--loop", "uvloop"), "uvloop"),
    (("--loop", "asyncio"), "asyncio"),
    (("--loop", "auto"), "uvloop"),  # uvloop is installed here
    ((), "uvloop"),  # the default, auto: uvloop where it is installed
], ids=["uvloop", "asyncio", "auto", "default"])
def test_worker_process_runs_task_on_chosen_loop(tm, worker_factory, flags, expected) -> None:
    pytest.importorskip("uvloop")
    task_id = tm.register_task(loop_module)
    worker = worker_factory("--burst", *flags)
    assert tm.wait_for_task_sync(task_id, timeout=WAIT) == expected
    assert tm.get_task_status(task_id) is TaskStatus.COMPLETED
    assert worker.wait(WAIT) == 0


def test_uvloop_asked_for_but_missing_is_a_usage_error(redis_server, namespace) -> None:
    out = subprocess.run(
        [sys.executable, "-c", WITHOUT_UVLOOP, "worker", "--url", redis_server.url,
         "--namespace", namespace, "--burst", "--loop", "uvloop"],
        cwd=REPO_ROOT, env=child_env(), capture_output=True, text=True,
        timeout=WAIT)
    assert out.returncode == 2, out.stderr
    assert "the uvloop package is not installed" in out.stderr
    assert "pip install 'taskmesh[uvloop]'" in out.stderr


def test_auto_without_uvloop_runs_on_asyncio(tm, backend, namespace, tmp_path) -> None:
    task_id = tm.register_task(loop_module)
    worker = WorkerProcess([sys.executable, "-c", WITHOUT_UVLOOP, "worker", "--url", backend.url,
                            "--namespace", namespace, "--burst", "--loop", "auto"],
                           tmp_path / "worker.log")
    try:
        assert tm.wait_for_task_sync(task_id, timeout=WAIT) == "asyncio"
        assert worker.wait(WAIT) == 0
    finally:
        worker.stop()


def test_uvloop_worker_survives_redis_dropping_its_connection(small_bulk_redis, namespace,
                                                              worker_factory) -> None:
    """tests/test_reliability.py's refused-outcome case, on uvloop: the 2 MB
    result must end that task FAILED, the worker still running."""
    pytest.importorskip("uvloop")
    with TaskManager(small_bulk_redis.url, namespace=namespace) as tm:
        big = tm.register_task("tests.bad_tasks:return_bytes", 2 * 1024 * 1024)
        worker = worker_factory("--loop", "uvloop", "--max-payload-bytes", str(8 << 20),
                                url=small_bulk_redis.url)
        # On asyncio this takes ~1 s; waits on the state, failing at once if the worker dies.
        for _ in range(int(DROPPED_WAIT_S / 0.2)):
            assert worker.returncode is None, "the worker died"
            try:
                tm.wait_for_task_sync(big, timeout=0.2)
            except TaskFailedError as exc:
                assert exc.error.type == "PayloadTooLargeError"
                return
            except TimeoutError:
                continue
        pytest.fail(f"task still {tm.get_task_status(big)} after {DROPPED_WAIT_S} s")
