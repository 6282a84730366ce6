"""The ``taskmesh`` command. Thin: each command parses options and calls one
library function. Shared options (--url, --namespace with their env
fallbacks) are defined once in :func:`connection_options`."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Any, Callable

import click

from .connection import DEFAULT_NAMESPACE


def connection_options(cmd: Callable[..., Any]) -> Callable[..., Any]:
    cmd = click.option("--namespace", envvar="TASKMESH_NAMESPACE", default=DEFAULT_NAMESPACE,
                       show_default=True, help="Namespace isolating one deployment.")(cmd)
    cmd = click.option("--url", envvar="TASKMESH_URL", default=None,
                       help="redis://, rediss://, unix:// or memory:// "
                            "(default: $TASKMESH_URL, else redis://localhost:6379/0).")(cmd)
    return cmd


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@click.group()
@click.version_option(package_name="taskmesh")
def main() -> None:
    """taskmesh: a distributed task manager backed by Redis."""


@main.command()
@connection_options
@click.option("--queues", default="default", show_default=True, help="Comma-separated queues.")
@click.option("--concurrency", default=10, show_default=True, type=click.IntRange(min=1),
              help="Tasks running at once in this worker.")
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="Thread pool size (default: --concurrency).")
@click.option("--lease-timeout", default=30.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds before another worker may take over this worker's tasks.")
@click.option("--grace-period", default=25.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds running tasks get to finish after SIGTERM.")
@click.option("--burst", is_flag=True, help="Exit once nothing is runnable in the queues.")
@click.option("--name", default=None, help="Worker id (default: host-pid-random).")
@click.option("--import", "imports", multiple=True, help="Module to import at start (repeatable).")
@click.option("--secret", envvar="TASKMESH_SECRET", default=None,
              help="HMAC secret: refuse unsigned or tampered payloads.")
@click.option("--no-pickle", is_flag=True, help="Refuse pickled code and values.")
@click.option("-v", "--verbose", is_flag=True)
def worker(url: str | None, namespace: str, queues: str, concurrency: int, threads: int | None,
           lease_timeout: float, grace_period: float, burst: bool, name: str | None,
           imports: tuple[str, ...], secret: str | None, no_pickle: bool, verbose: bool) -> None:
    """Run a worker until SIGTERM/SIGINT (or until drained, with --burst)."""
    from .worker import Worker, WorkerOptions

    _setup_logging(verbose)
    sys.path.insert(0, os.getcwd())
    try:
        options = WorkerOptions(
            url=url, namespace=namespace, queues=queues, concurrency=concurrency,  # type: ignore[arg-type]
            threads=threads, lease_timeout=lease_timeout, grace_period=grace_period, burst=burst,
            name=name, imports=list(imports), secret=secret, no_pickle=no_pickle,
        )
        w = Worker(options)
    except (ValueError, ImportError) as exc:
        raise click.UsageError(str(exc)) from exc
    sys.exit(run_worker_process(w))


def run_worker_process(w: Any) -> int:
    """Runs a worker in the foreground with signal handling: the first
    SIGTERM/SIGINT stops it gracefully, a second exits at once."""
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            logging.getLogger("taskmesh").warning("second signal: exiting now")
            os._exit(1)
        w.request_stop()

    async def main_() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        await w.run()

    asyncio.run(main_())
    logging.shutdown()
    if w.busy_threads:
        # A thread task outlived the grace period; it was handed back. Do not
        # let interpreter shutdown join it forever.
        os._exit(0)
    return 0


@main.command()
@connection_options
@click.argument("task_id")
def inspect(url: str | None, namespace: str, task_id: str) -> None:
    """Show one task in full."""
    from .exceptions import TaskNotFoundError
    from .manager import TaskManager
    from .ui import print_task

    with TaskManager(url, namespace=namespace) as tm:
        try:
            info = tm.get_task(task_id)
        except TaskNotFoundError as exc:
            raise click.ClickException(str(exc)) from exc
        print_task(info, tm.get_task_result(task_id) if info.status == "completed" else None)


@main.command()
@click.option("--port", default=0, type=int, help="Port (default: a free one).")
def server(port: int) -> None:
    """Start a local Redis for development and print its URL."""
    from .server import serve_forever

    serve_forever(port)


@main.command()
@connection_options
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1))
def demo(url: str | None, namespace: str, workers: int) -> None:
    """Run a small DAG through real worker processes and show what happened."""
    from .demo import run_demo

    sys.exit(run_demo(url=url, namespace=namespace, workers=workers))


if __name__ == "__main__":  # pragma: no cover
    main()
