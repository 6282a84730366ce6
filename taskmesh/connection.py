"""Turns a taskmesh URL into Redis clients.

``redis://``, ``rediss://`` (TLS) and ``unix://`` go to redis-py (AUTH/ACL
user and password ride in the URL). ``redis+cluster://`` and
``rediss+cluster://`` go to redis-py's cluster client, ``redis+sentinel://``
to a Sentinel-managed master client (README *Redis Cluster, Sentinel and
failover*). ``memory://`` is an
in-process fakeredis server with Lua, one per process, shared by every
manager, worker and subscription in it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Iterator, TypeVar
from urllib.parse import parse_qsl, unquote

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel
from redis.cluster import LoadBalancingStrategy
from redis.connection import URL_QUERY_ARGUMENT_PARSERS, HiredisRespSerializer, to_bool
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.utils import HIREDIS_AVAILABLE

if HIREDIS_AVAILABLE:
    import hiredis

from .exceptions import TaskmeshConnectionError
from .scripts import busy_error

DEFAULT_URL = "redis://localhost:6379/0"
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SCHEMES = ("redis", "rediss", "unix", "memory", *CLUSTER_SCHEMES, *SENTINEL_SCHEMES)
CONNECT_TIMEOUT_S = 5.0  # default socket_connect_timeout of cluster and sentinel URLs
DEFAULT_NAMESPACE = "default"

_memory_lock = threading.Lock()
_memory_server: Any = None


def resolve_url(url: str | None) -> str:
    url = url or os.environ.get("TASKMESH_URL") or DEFAULT_URL
    if not isinstance(url, str):
        raise TypeError("url must be a string")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        raise ValueError(
            f"unsupported URL {url!r}: use redis://, rediss://, unix://, memory://, "
            "redis+cluster://, rediss+cluster:// or redis+sentinel://"
        )
    if scheme in CLUSTER_SCHEMES or scheme in SENTINEL_SCHEMES:
        parse_multi_host(url)  # bad host lists and options fail here, before any I/O
    return url


def resolve_namespace(namespace: str | None) -> str:
    return namespace or os.environ.get("TASKMESH_NAMESPACE") or DEFAULT_NAMESPACE


def is_memory(url: str) -> bool:
    return url.lower().startswith("memory://")


def memory_serializes(url: str) -> bool:
    """``memory://?serialize=1``: round-trip payloads through the codec."""
    query = url.split("?", 1)[1] if "?" in url else ""
    # redis-py leaves to_bool unannotated; it answers a bool or None.
    return any(to_bool(v) for k, v in parse_qsl(query) if k == "serialize")  # type: ignore[no-untyped-call]


# Namespaces opened on the memory:// store, most recent last: a module-level
# subscribe() without a URL listens there (the store, not a manager, knows).
_memory_namespaces: list[str] = []


def note_memory_namespace(namespace: str) -> None:
    with _memory_lock:
        if namespace in _memory_namespaces:
            _memory_namespaces.remove(namespace)
        _memory_namespaces.append(namespace)


def memory_default() -> tuple[str, str] | None:
    """(url, namespace) of the memory:// store when this process uses one."""
    with _memory_lock:
        if _memory_server is None or not _memory_namespaces:
            return None
        return "memory://", _memory_namespaces[-1]


def memory_server() -> Any:
    global _memory_server
    with _memory_lock:
        if _memory_server is None:
            import fakeredis

            _tolerate_closed_loops()
            _memory_server = fakeredis.FakeServer()
        return _memory_server


def _tolerate_closed_loops() -> None:
    """fakeredis wakes a blocked async read (BLPOP, XREAD BLOCK) through a
    callback into that read's event loop, and drops the callback only when
    the read ends. A loop closed while one of its reads was blocked (a
    manager or worker closing) leaves the callback behind, and from then on
    every write to the shared store raised "Event loop is closed" in the
    *writer*, another manager or worker. Here a callback whose loop is
    closed is dropped instead; memory:// only, nothing else uses fakeredis.
    Our own loops no longer leave such reads behind (portal.finish_loop
    cancels and awaits them before a loop closes; asyncio.run does for
    workers): this stays as the guard for loops a caller closes itself."""
    from fakeredis._core._database import Database

    if getattr(Database.wake_all, "_taskmesh", False):
        return

    def wake_all(self: Any) -> None:
        self.condition.notify_all()
        for callback in list(self._change_callbacks):
            try:
                callback()
            except RuntimeError:  # its loop is closed: nobody waits on it any more
                self._change_callbacks.discard(callback)

    wake_all._taskmesh = True  # type: ignore[attr-defined]
    Database.wake_all = wake_all  # type: ignore[method-assign]


# A pooled connection that died with a Redis restart fails on first use; a
# few quick retries on a fresh connection make that invisible to callers.
# Safe for taskmesh's commands: scripts are idempotent or fenced by claim
# tokens, so one that ran before its reply was lost is harmless to resend.
_RETRIES = 3


def _fails_for_good(error: Exception) -> bool:
    """Wrong or missing credentials: redis-py's AuthenticationError is a
    ConnectionError, so its retry would try again (3.5 s of a connection's
    nested retries for a missing password), and no retry can fix it."""
    return isinstance(error, redis.exceptions.AuthenticationError)


class _Retry(Retry):
    """redis-py's retry, letting an error no retry can fix through at once:
    its ``fail`` handler (the disconnect) still runs first."""

    def call_with_retry(self, do: Any, fail: Any, *args: Any, **kwargs: Any) -> Any:
        def fail_then_stop(error: Exception, *count: int) -> Any:
            handled = fail(error, *count)
            if _fails_for_good(error):
                raise error
            return handled

        return super().call_with_retry(do, fail_then_stop, *args, **kwargs)


class _AsyncRetry(AsyncRetry):
    """:class:`_Retry` for redis-py's asyncio client."""

    async def call_with_retry(self, do: Any, fail: Any, *args: Any, **kwargs: Any) -> Any:
        async def fail_then_stop(error: Exception, *count: int) -> Any:
            handled = await fail(error, *count)
            if _fails_for_good(error):
                raise error
            return handled

        return await super().call_with_retry(do, fail_then_stop, *args, **kwargs)


def _retry_options(retry_class: type, url: str) -> dict[str, Any]:
    options: dict[str, Any] = {
        "retry": retry_class(ExponentialBackoff(cap=1.0, base=0.05), _RETRIES),
        "retry_on_error": [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
        "health_check_interval": 30,
    }
    if tcp_keepalive_applies(url):
        options["socket_keepalive"] = True
    return options


def tcp_keepalive_applies(url: str) -> bool:
    """TCP keepalive for every URL but a unix socket's, whose connection
    class refuses the option (redis-py's UnixDomainSocketConnection)."""
    return not url.lower().startswith("unix:")


# Query parameters of cluster/sentinel URLs that are not connection-pool
# options redis-py already knows how to cast.
def _bool(value: str) -> bool | None:
    return to_bool(value)  # type: ignore[no-untyped-call, no-any-return]


_OPTION_PARSERS: dict[str, Callable[[str], Any]] = {
    **URL_QUERY_ARGUMENT_PARSERS,  # type: ignore[dict-item]
    "read_from_replicas": _bool,
    "require_full_coverage": _bool,
    "dynamic_startup_nodes": _bool,
    "reinitialize_steps": int,
    "cluster_error_retry_attempts": int,
    "ssl_cert_reqs": str,
    "ssl_ca_certs": str,
    "ssl_certfile": str,
    "ssl_keyfile": str,
    "ssl_check_hostname": _bool,
    "sentinel_password": str,
    "sentinel_username": str,
    "min_other_sentinels": int,
}


@dataclass(frozen=True)
class MultiHostURL:
    """A parsed ``redis+cluster://`` or ``redis+sentinel://`` URL."""

    kind: str  # "cluster" | "sentinel"
    hosts: tuple[tuple[str, int], ...]
    tls: bool
    username: str | None = None
    password: str | None = None
    service: str | None = None  # sentinel only
    db: int = 0  # sentinel only (a cluster has db 0 alone)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def connection_kwargs(self) -> dict[str, Any]:
        """What a plain client to one of the data nodes needs."""
        kwargs: dict[str, Any] = {k: v for k, v in self.options.items()
                                  if k.startswith("ssl_") or k.startswith("socket_")}
        kwargs.setdefault("socket_connect_timeout", CONNECT_TIMEOUT_S)
        if self.tls:
            kwargs["ssl"] = True
        if self.username:
            kwargs["username"] = self.username
        if self.password:
            kwargs["password"] = self.password
        return kwargs


def _split_host(item: str, url: str) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [ipv6]:port
        host, _, rest = item[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ValueError(f"bad host {item!r} in URL {url!r}: use host:port")
    try:
        port = int(port_text) if port_text else (26379 if "sentinel" in url.split("://")[0]
                                                 else 6379)
    except ValueError:
        raise ValueError(f"bad port in {item!r} of URL {url!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"bad port in {item!r} of URL {url!r}")
    return host, port


def parse_multi_host(url: str) -> MultiHostURL:
    """Parses ``scheme://[user:password@]host:port[,host:port...][/path][?options]``.

    The path is empty for a cluster and ``service_name[/db]`` for Sentinel;
    query parameters become client options, cast like redis-py casts its own
    URL options (``?read_from_replicas=false``)."""
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    kind = "cluster" if scheme in CLUSTER_SCHEMES else "sentinel"
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    username = password = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, _, pw = userinfo.partition(":")
        username, password = unquote(user) or None, unquote(pw) or None
    hosts = tuple(_split_host(item, url) for item in netloc.split(",") if item.strip())
    if not hosts:
        raise ValueError(f"URL {url!r} names no host")
    options: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=False):
        parser = _OPTION_PARSERS.get(name, _auto_cast)
        try:
            options[name] = parser(value)
        except (TypeError, ValueError):
            raise ValueError(f"invalid value {value!r} for {name!r} in URL {url!r}") from None
    if "password" in options:
        password = options.pop("password")
    if "username" in options:
        username = options.pop("username")
    service, db = None, 0
    parts = [unquote(p) for p in path.split("/") if p]
    if kind == "sentinel":
        if not parts:
            raise ValueError(f"sentinel URL {url!r} needs a service name: "
                             "redis+sentinel://host:port/service_name[/db]")
        service = parts[0]
        try:
            db = int(parts[1]) if len(parts) > 1 else int(options.pop("db", 0))
        except ValueError:
            raise ValueError(f"bad db number in URL {url!r}") from None
        if len(parts) > 2:
            raise ValueError(f"sentinel URL {url!r}: path is /service_name[/db]")
    elif parts and parts != ["0"]:
        raise ValueError(f"cluster URL {url!r}: a Redis Cluster has only db 0, no path")
    options.pop("db", None) if kind == "cluster" else None
    return MultiHostURL(kind, hosts, scheme.startswith("rediss"), username, password,
                        service, db, options)


def _auto_cast(value: str) -> Any:
    low = value.lower()
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def _multi(url: str) -> MultiHostURL | None:
    scheme = url.split("://", 1)[0].lower()
    if scheme in CLUSTER_SCHEMES or scheme in SENTINEL_SCHEMES:
        return parse_multi_host(url)
    return None


def _cluster_kwargs(target: MultiHostURL, options: dict[str, Any]) -> dict[str, Any]:
    kwargs = {**target.connection_kwargs, "socket_keepalive": True,
              **{k: v for k, v in target.options.items()
                 if not k.startswith("sentinel_") and k != "min_other_sentinels"},
              **options}
    kwargs.pop("retry", None)  # the cluster client has its own retry policy
    kwargs.pop("retry_on_error", None)
    # The URL keeps redis-py's old option; the clients now warn on it and
    # take load_balancing_strategy, ROUND_ROBIN being what True meant.
    if kwargs.pop("read_from_replicas", False):
        kwargs.setdefault("load_balancing_strategy", LoadBalancingStrategy.ROUND_ROBIN)
    return kwargs


def _cluster_unreachable(target: MultiHostURL, exc: BaseException) -> "TaskmeshConnectionError":
    hosts = ",".join(f"{h}:{p}" for h, p in target.hosts)
    timeout = target.connection_kwargs["socket_connect_timeout"]
    return TaskmeshConnectionError(
        f"cannot use the Redis Cluster at {hosts} (connect timeout {timeout} s): {exc}")


def _sentinel_parts(target: MultiHostURL,
                    options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    sentinel_kwargs = {"socket_connect_timeout": target.connection_kwargs["socket_connect_timeout"],
                       "socket_timeout": target.options.get("socket_timeout", 5.0)}
    if "sentinel_password" in target.options:
        sentinel_kwargs["password"] = target.options["sentinel_password"]
    if "sentinel_username" in target.options:
        sentinel_kwargs["username"] = target.options["sentinel_username"]
    conn = {**target.connection_kwargs,
            **{k: v for k, v in target.options.items()
               if not k.startswith("sentinel_") and k != "min_other_sentinels"},
            **options}
    return sentinel_kwargs, conn


def sync_client(url: str, **options: Any) -> Any:
    """A redis-py client for ``url``: Redis, RedisCluster, or a Sentinel
    master client (which re-asks the sentinels for the master after a
    failover). Raises TaskmeshConnectionError when no cluster node answers."""
    if is_memory(url):
        import fakeredis

        return fakeredis.FakeRedis(server=memory_server())
    target = _multi(url)
    if target is None:
        single = redis.Redis.from_url(url, **{**_retry_options(_Retry, url), **options})
        _pack_with_hiredis(single.connection_pool)
        return single
    if target.kind == "cluster":
        nodes = [redis.cluster.ClusterNode(h, p)  # type: ignore[no-untyped-call]
                 for h, p in target.hosts]
        try:
            client = redis.cluster.RedisCluster(startup_nodes=nodes,
                                                **_cluster_kwargs(target, options))
        except redis.exceptions.RedisClusterException as exc:
            raise _cluster_unreachable(target, exc) from exc
        client._taskmesh_target = target  # type: ignore[attr-defined]
        return client
    sentinel_kwargs, conn = _sentinel_parts(target, options)
    sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(target.hosts), sentinel_kwargs=sentinel_kwargs,
        min_other_sentinels=target.options.get("min_other_sentinels", 0),
        **{**_retry_options(_Retry, url), **conn})
    assert target.service is not None  # parse_multi_host requires one
    client = sentinel.master_for(target.service, db=target.db)  # type: ignore[no-untyped-call]
    client._taskmesh_target = target
    return client


class _FastPacker(HiredisRespSerializer):
    """hiredis packing (C) without redis-py's per-argument Python pass (it
    converts bytearray/memoryview arguments, which taskmesh never sends): a
    report_many call or a registration has 30 to 100 arguments. Anything
    hiredis does not take goes the general way, which names the problem."""

    def pack(self, *args: Any) -> list[bytes]:
        first = args[0]
        if type(first) is str and " " not in first:
            try:
                return [hiredis.pack_command(args)]
            except TypeError:
                pass
        packed: list[bytes] = super().pack(*args)  # hiredis's pack() is typed Any
        return packed


class _HiredisPacking:
    """Packs commands with hiredis (C), as redis-py's sync connections do
    when hiredis is installed; its asyncio connections pack in Python, which
    was the largest single item of a worker's CPU per task (about 10 us for
    a report's 14 arguments, 2 us this way; see benchmarks/PROFILE.md). The
    bytes sent are the same. Sync connections get the same packer."""

    _packer = _FastPacker()

    def pack_command(self, *args: Any) -> list[bytes]:
        return self._packer.pack(*args)

    def _construct_command_packer(self, packer: Any) -> Any:
        return packer if packer is not None else self._packer


_packing_classes: dict[type, type] = {}


def _pack_with_hiredis(pool: Any) -> None:
    """Makes ``pool`` (sync or asyncio) open connections that pack with hiredis."""
    if not HIREDIS_AVAILABLE:
        return
    base = pool.connection_class
    cls = _packing_classes.get(base)
    if cls is None:
        cls = _packing_classes[base] = type(f"Hiredis{base.__name__}", (_HiredisPacking, base), {})
    pool.connection_class = cls


def async_client(url: str, *, max_connections: int | None = None, **options: Any) -> Any:
    """The asyncio twin of :func:`sync_client` (connects lazily). With
    ``max_connections`` (a single Redis), a *blocking* pool of that size: a
    caller beyond it waits for a free connection instead of failing with
    MaxConnectionsError (thousands of waiters in one loop share a few)."""
    if is_memory(url):
        import fakeredis

        return fakeredis.FakeAsyncRedis(server=memory_server())
    target = _multi(url)
    if target is None:
        options = {**_retry_options(_AsyncRetry, url), **options}
        if max_connections is None:
            pool = redis.asyncio.ConnectionPool.from_url(url, **options)
        else:
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                url, max_connections=max_connections, timeout=None, **options)
        _pack_with_hiredis(pool)
        return redis.asyncio.Redis.from_pool(pool)
    if target.kind == "cluster":
        nodes = [redis.asyncio.cluster.ClusterNode(h, p) for h, p in target.hosts]
        client: Any = redis.asyncio.cluster.RedisCluster(startup_nodes=nodes,
                                                         **_cluster_kwargs(target, options))
    else:
        sentinel_kwargs, conn = _sentinel_parts(target, options)
        sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            list(target.hosts), sentinel_kwargs=sentinel_kwargs,
            min_other_sentinels=target.options.get("min_other_sentinels", 0),
            **{**_retry_options(_AsyncRetry, url), **conn})
        assert target.service is not None
        client = sentinel.master_for(target.service, db=target.db)
    client._taskmesh_target = target
    return client


def is_cluster_client(client: Any) -> bool:
    return isinstance(client, (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster))


def pubsub_for(client: Any, attempt: int) -> tuple[Any, Any]:
    """A pub/sub object for ``client`` and the extra client to close with it
    (or None).

    On a cluster, classic PUBLISH reaches every node, so listening on any one
    node hears the whole namespace. A plain connection to one node is used
    (the async cluster client's own pub/sub follows a slot map that only
    other commands refresh); ``attempt`` rotates over the known nodes, so a
    listener whose node died re-subscribes on another one."""
    if not is_cluster_client(client):
        return client.pubsub(ignore_subscribe_messages=True), None
    target: MultiHostURL = client._taskmesh_target
    known = [(n.host, n.port) for n in client.get_nodes()] if client.get_nodes() else []
    candidates = list(dict.fromkeys(known + list(target.hosts)))
    host, port = candidates[attempt % len(candidates)]
    node = redis.asyncio.Redis(host=host, port=port, **target.connection_kwargs)
    return node.pubsub(ignore_subscribe_messages=True), node


# Errors that mean "Redis is unreachable for now": callers back off and retry.
# On a cluster or behind Sentinel that includes a failover in progress: a
# slot without a master, a node still loading, a demoted master refusing writes.
CONNECTION_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.RedisClusterException,
    redis.exceptions.ReadOnlyError,
    OSError,
)


# ---- one exception for an unreachable Redis ------------------------------------------
#
# redis-py names "could not use Redis" many ways, by URL kind: a refused or
# dropped connection (ConnectionError), a read past socket_timeout
# (TimeoutError), a server still loading its data (BusyLoadingError), no
# master for the service behind Sentinel (MasterNotFoundError), a cluster
# whose slots have no node answering (ClusterDownError, SlotNotCoveredError).
# The producer API (TaskManager, so the CLI too) raises them all as one
# TaskmeshConnectionError whose __cause__ is the redis-py error. Workers and
# listeners catch CONNECTION_ERRORS and wait the outage out instead.
_UNREACHABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.SlotNotCoveredError,
)
# ConnectionErrors by class that are set-up mistakes, not outages: a wrong
# password or missing ACL right, a pool too small. They stay as they are.
_NOT_OUTAGES = (
    redis.exceptions.AuthenticationError,
    redis.exceptions.AuthorizationError,
    redis.exceptions.MaxConnectionsError,
    TaskmeshConnectionError,  # translated already (a public method calling another)
)


def mask_url(url: str) -> str:
    """The URL with its password hidden, for messages."""
    return re.sub(r"(://[^:@/]*:)[^@/]+@", r"\1***@", url)


def unreachable(exc: BaseException, url: str) -> TaskmeshConnectionError | None:
    """The TaskmeshConnectionError standing for ``exc``, if ``exc`` means
    Redis at ``url`` could not be used; else None (raise ``exc`` itself)."""
    if not _is_outage(exc):
        return None
    return TaskmeshConnectionError(f"cannot reach Redis at {mask_url(url)}: {exc}")


def _is_outage(exc: BaseException) -> bool:
    if isinstance(exc, _NOT_OUTAGES):
        return False
    if isinstance(exc, _UNREACHABLE):
        return True
    # The cluster client's "Redis Cluster cannot be connected" is a plain
    # RedisClusterException raised from the last node's connection error.
    return (isinstance(exc, redis.exceptions.RedisClusterException)
            and exc.__cause__ is not None and _is_outage(exc.__cause__))


C = TypeVar("C", bound=type)


def raises_taskmesh_connection_errors(cls: C) -> C:
    """Class decorator: every public method of ``cls`` (sync, async, async
    generator) raises :func:`unreachable`'s error in place of a redis-py
    connection error, reading the URL from ``self.url``. One place for the
    whole API rather than a try/except in each method; private helpers are
    left alone, so the translation happens once, at the caller's edge."""
    for name, member in list(vars(cls).items()):
        if name.startswith("_") or not inspect.isfunction(member):
            continue
        setattr(cls, name, _translating(member))
    return cls


_TRANSLATED: tuple[type[BaseException], ...] = (
    *_UNREACHABLE, redis.exceptions.RedisClusterException, redis.exceptions.ResponseError)


def _api_error(exc: BaseException, url: str) -> BaseException | None:
    """What the public API raises for redis-py's ``exc`` (None: ``exc``
    itself): Redis at ``url`` unusable is a TaskmeshConnectionError; a BUSY
    or OOM reply (a plain read meets them as the scripts do) a
    ServerBusyError."""
    translated = unreachable(exc, url)  # first: ClusterDownError is a ResponseError too
    if translated is None and isinstance(exc, redis.exceptions.ResponseError):
        return busy_error(exc)
    return translated


@contextlib.contextmanager
def reraising_unreachable(url: str) -> Iterator[None]:
    """Inside, redis-py's errors leave as the API's (:func:`_api_error`),
    the redis-py error as their cause."""
    try:
        yield
    except _TRANSLATED as exc:
        translated = _api_error(exc, url)
        if translated is None:
            raise
        raise translated from exc


def _translating(func: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(func):
        @functools.wraps(func)
        async def agen(self: Any, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            with reraising_unreachable(self.url):
                async for item in func(self, *args, **kwargs):
                    yield item
        return agen
    if inspect.iscoroutinefunction(func):
        @functools.wraps(func)
        async def coro(self: Any, *args: Any, **kwargs: Any) -> Any:
            with reraising_unreachable(self.url):
                return await func(self, *args, **kwargs)
        return coro

    # A plain try (free on the success path since Python 3.11), not the
    # context manager: a generator-based ``with`` costs ~1-2 us per call,
    # which a single register_task notices.
    @functools.wraps(func)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(self, *args, **kwargs)
        except _TRANSLATED as exc:
            translated = _api_error(exc, self.url)
            if translated is None:
                raise
            raise translated from exc
    return call
