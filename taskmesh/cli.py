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
    cmd = click.option("--namespace", envvar="TASKMESH_NAMESPACE", default=None,
                       help="Namespace isolating one deployment "
                            f"(default: $TASKMESH_NAMESPACE, else '{DEFAULT_NAMESPACE}').")(cmd)
    cmd = click.option("--url", envvar="TASKMESH_URL", default=None,
                       help="redis://, rediss://, unix://, memory://, redis+cluster://h:p,h:p, "
                            "rediss+cluster:// or redis+sentinel://h:p/service[/db] "
                            "(default: $TASKMESH_URL, else redis://localhost:6379/0).")(cmd)
    return cmd


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


class _Group(click.Group):
    """Any taskmesh error (a corrupted record, Redis out of memory, a bad
    signature) ends a command with one clear line, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from .exceptions import TaskmeshError

        try:
            return super().invoke(ctx)
        except TaskmeshError as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc


LOOPS = ("auto", "asyncio", "uvloop")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(choice: str) -> LoopFactory | None:
    """The event loop ``taskmesh worker --loop`` runs on (None: asyncio's own).
    uvloop is optional (``taskmesh[uvloop]``): auto uses it when it imports;
    asking for it by name when it does not is an error, not a silent fallback.
    auto is the default: uvloop cuts the worker's CPU per task (PROFILE.md,
    *uvloop*), and a plain install, without the extra, runs asyncio. Under
    uvloop a write to a connection Redis has already closed raises
    RuntimeError (MagicStack/uvloop#506) where asyncio drops it and the read raises ConnectionError; the worker's held
    connections (held.py) map a closing transport to a connection error
    before writing (README *Workers*)."""
    if choice not in LOOPS:
        raise ValueError(f"--loop must be one of {', '.join(LOOPS)}, not {choice!r}")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ValueError("--loop uvloop: the uvloop package is not installed "
                             "(pip install 'taskmesh[uvloop]')") from None
        return None
    return uvloop.new_event_loop


@click.group(cls=_Group)
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
@click.option("--processes", default=None, type=click.IntRange(min=1),
              help="Child processes for executor_type='process' (default: the number of "
                   "CPUs; started on the first process task).")
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
@click.option("--max-payload-bytes", default=16 * 1024 * 1024, show_default=True,
              type=click.IntRange(min=1), help="Largest serialized result a task may return.")
@click.option("--loop", type=click.Choice(LOOPS), default="auto", show_default=True,
              envvar="TASKMESH_LOOP",
              help="Event loop: asyncio's own, uvloop (the taskmesh[uvloop] extra; less worker "
                   "CPU per task) or auto (uvloop when it is installed). Also $TASKMESH_LOOP.")
@click.option("-v", "--verbose", is_flag=True)
def worker(url: str | None, namespace: str | None, queues: str, concurrency: int, threads: int | None,
           processes: int | None, lease_timeout: float, grace_period: float, burst: bool,
           name: str | None, imports: tuple[str, ...], secret: str | None, no_pickle: bool,
           max_payload_bytes: int, loop: str, verbose: bool) -> None:
    """Run a worker until SIGTERM/SIGINT (or until drained, with --burst)."""
    from .worker import Worker, WorkerOptions

    _setup_logging(verbose)
    sys.path.insert(0, os.getcwd())
    try:
        options = WorkerOptions(
            url=url, namespace=namespace, queues=queues, concurrency=concurrency,  # type: ignore[arg-type]
            threads=threads, processes=processes, lease_timeout=lease_timeout, grace_period=grace_period, burst=burst,
            name=name, imports=list(imports), secret=secret, no_pickle=no_pickle,
            max_payload_bytes=max_payload_bytes,
        )
        w = Worker(options)
        factory = loop_factory(loop)
    except (ValueError, ImportError) as exc:
        raise click.UsageError(str(exc)) from exc
    sys.exit(run_worker_process(w, factory))


def run_worker_process(w: Any, factory: LoopFactory | None = None) -> int:
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

    import redis.exceptions

    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main_())
    except redis.exceptions.AuthenticationError as exc:
        raise click.ClickException(f"Redis refused the credentials in the URL: {exc}") from exc
    logging.shutdown()
    if w.busy_threads:
        # A thread task outlived the grace period; it was handed back. Do not
        # let interpreter shutdown join it forever.
        os._exit(0)
    return 0


@main.command()
@connection_options
@click.option("--json", "as_json", is_flag=True, help="Print get_metrics() as JSON.")
@click.option("--prometheus", is_flag=True, help="Print the Prometheus text format.")
@click.option("--watch", type=click.FloatRange(min=0.1), default=None, metavar="S",
              help="Refresh in place every S seconds.")
def metrics(url: str | None, namespace: str | None, as_json: bool, prometheus: bool,
            watch: float | None) -> None:
    """Queues by priority, running, scheduled, waiting, workers, throughput, failures."""
    import json
    import time

    from rich.console import Console
    from rich.live import Live

    from .manager import TaskManager
    from .prometheus import exposition
    from .ui import metrics_view

    if as_json and prometheus:
        raise click.UsageError("--json and --prometheus are exclusive")
    with TaskManager(url, namespace=namespace) as tm:
        def render() -> Any:
            snapshot = tm.get_metrics()
            if as_json:
                return json.dumps(snapshot, indent=2)
            if prometheus:
                return exposition(snapshot)
            return metrics_view(snapshot)

        if watch is None:
            out = render()
            if prometheus:
                click.echo(out, nl=False)
            elif as_json:
                click.echo(out)
            else:
                Console().print(out)
            return
        try:
            with Live(render(), refresh_per_second=4, screen=False) as live:
                while True:
                    time.sleep(watch)
                    live.update(render())
        except KeyboardInterrupt:
            pass


@main.command()
@connection_options
@click.option("--since", default=None, metavar="ID",
              help="Replay events after this stream id first ('0' for all kept).")
@click.option("--type", "types", multiple=True, help="Only these event types (repeatable).")
def events(url: str | None, namespace: str | None, since: str | None, types: tuple[str, ...]) -> None:
    """Tail the event stream live (Ctrl-C to stop)."""
    from rich.console import Console

    from .events import after, iterate_events, live_positions, normalize_types
    from .manager import TaskManager
    from .ui import event_line

    try:
        wanted = normalize_types(list(types) or None)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    console = Console()

    async def tail(tm: TaskManager) -> None:
        # Where every shard's stream ends now: the replay prints up to there,
        # the live tail from there on, so nothing is missed or shown twice.
        client = tm._state().client
        start = await live_positions(client, tm.keys)
        last = since
        while since is not None:
            batch = tm.get_events(since=last, count=1000)
            newer = 0  # events the live tail will show
            for event in batch:
                shard, _, stream_id = (event.id or "").partition(":")
                if after(start.get(int(shard or 0), "0-0"), stream_id):
                    newer += 1
                elif wanted is None or event.type in wanted:
                    console.print(event_line(event))
            if len(batch) < 1000 or newer == len(batch):
                break
            last = batch[-1].id
        await live(client, tm, start)

    async def live(client: Any, tm: TaskManager, start: dict[int, str]) -> None:
        async for event in iterate_events(client, tm.keys, wanted, start=start):
            console.print(event_line(event))

    with TaskManager(url, namespace=namespace) as tm:
        try:
            asyncio.run(tail(tm))
        except KeyboardInterrupt:
            pass


@main.command()
@connection_options
@click.option("--unpickle", is_flag=True,
              help="Unpickle a pickled result to show it. This runs code read from Redis: "
                   "only for data you trust. Default: shown as <pickled, N bytes>.")
@click.argument("task_id")
def inspect(url: str | None, namespace: str | None, unpickle: bool, task_id: str) -> None:
    """Show one task in full (never unpickling anything unless --unpickle)."""
    from .exceptions import TaskNotFoundError
    from .manager import TaskManager
    from .ui import print_task

    with TaskManager(url, namespace=namespace) as tm:
        try:
            info = tm.get_task(task_id)
        except TaskNotFoundError as exc:
            raise click.ClickException(str(exc)) from exc
        print_task(info, tm.get_task_result(task_id, unpickle=unpickle)
                   if info.status == "completed" else None)


@main.command()
@connection_options
@click.option("--port", default=0, type=int, help="Port (default: a free one).")
def server(url: str | None, namespace: str | None, port: int) -> None:
    """Start a local Redis for development and print its URL.

    (--url and --namespace are accepted like everywhere else and ignored: the
    server prints the URL that clients should use.)"""
    from .server import serve_forever

    serve_forever(port)


@main.command()
@connection_options
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=0),
              help="Worker processes to launch (0: use workers already running).")
def demo(url: str | None, namespace: str | None, workers: int) -> None:
    """Run a small DAG through real worker processes and show what happened.
    Without --namespace it uses a fresh one."""
    from .demo import run_demo

    sys.exit(run_demo(url=url, namespace=namespace, workers=workers))


@main.group()
def periodic() -> None:
    """Periodic schedules (added with TaskManager.add_periodic)."""


@periodic.command("list")
@connection_options
@click.option("--json", "as_json", is_flag=True, help="Print the schedules as JSON.")
def periodic_list(url: str | None, namespace: str | None, as_json: bool) -> None:
    """Every schedule: when it runs next, when it last ran, its last task."""
    import dataclasses
    import json

    from .manager import TaskManager
    from .ui import periodic_lines

    with TaskManager(url, namespace=namespace) as tm:
        schedules = tm.list_periodic()
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(s) for s in schedules], indent=2))
    else:
        click.echo("\n".join(periodic_lines(schedules)))


@periodic.command("remove")
@connection_options
@click.argument("name")
def periodic_remove(url: str | None, namespace: str | None, name: str) -> None:
    """Delete the schedule NAME (tasks of past ticks are kept)."""
    from .manager import TaskManager

    with TaskManager(url, namespace=namespace) as tm:
        if not tm.remove_periodic(name):
            raise click.ClickException(f"no periodic schedule named {name!r}")
    click.echo(f"removed periodic schedule {name}")


@main.command()
@connection_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (default: loopback only).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--token", envvar="TASKMESH_DASHBOARD_TOKEN", default=None,
              help="Require this token (Bearer header, or the cookie set by /?token=T).")
@click.option("--read-only", is_flag=True, help="No Cancel/Retry: the API refuses them (403).")
def dashboard(url: str | None, namespace: str | None, host: str, port: int, token: str | None,
              read_only: bool) -> None:
    """Serve the web dashboard and its JSON API."""
    from .dashboard import serve

    _setup_logging(False)
    try:
        serve(url, namespace=namespace, host=host, port=port, token=token, read_only=read_only)
    except (ValueError, ConnectionError) as exc:  # bad URL/namespace; a cluster that never answered
        raise click.ClickException(str(exc)) from exc


if __name__ == "__main__":  # pragma: no cover
    main()
