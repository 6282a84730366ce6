"""The one home of taskmesh's Redis key schema.

Every key of a namespace starts with ``taskmesh:{<namespace>}:`` — the braces
are a Redis Cluster hash tag, so all keys of one namespace live in one slot and
every Lua script touching them runs on one node. A sharded namespace (README
*Sharded namespaces*) has one such prefix per shard (see :class:`Keys` and
:mod:`taskmesh.sharding`); every family below exists once per shard.

Scripts get the fixed keys they touch through ``KEYS`` and the prefix as
``ARGV[1]``; keys that depend on data (another task's hash, a dependents set)
are derived inside Lua by ``lua/prelude.lua``, which mirrors the functions
below (``tests/test_keys.py`` pins the two together). Being prefix-derived,
those keys are always in the same slot as the declared ones.

=====================  ======  ===================================================
key (after prefix)     type    meaning
=====================  ======  ===================================================
task:<id>              hash    the task record (fields in docs/design.md)
dependents:<id>        set     ids of tasks waiting for <id> to complete
queue:<name>           zset    QUEUED ids; score = (255-priority)*2^44 + seq,
                               so ZPOPMIN is highest priority, FIFO within one
parked:<name>          zset    QUEUED ids waiting for a rate-limit token, out of
                               queue:<name> so they hold nothing up; score = ms
                               when their turn for a token comes
wake:<name>            list    wake-up tokens for idle workers (BLPOP), capped
alarm:<worker id>      list    a worker's own wake-up token, pushed by its local
                               timer at a due time (see taskmesh/idle.py)
scheduled:<name>       zset    SCHEDULED ids (retry delay, delay=/eta=);
                               score = due ms
running                zset    RUNNING ids; score = lease deadline ms
byseq:<status>         zset    RUNNING / SCHEDULED ids again, score = seq: the
                               newest-first listing index of those statuses
waiting                zset    WAITING ids (dependencies unfinished); score = seq
pending                zset    PENDING ids (deferred); score = seq
done:<status>          zset    terminal ids per status; score = record expiry
                               ms, or 2^52 + finished ms when kept forever
                               (descending = most recently finished first)
tag:<tag>              zset    ids of every task carrying <tag>; score = seq
tag_expiry             zset    JSON [id, tags] of tagged tasks whose record
                               expires; score = expiry ms (the reaper then
                               removes the id from each tag:<tag>)
qcount:<name>          hash    priority -> number of QUEUED ids (metrics)
rate:<epoch second>    hash    outcome counts in that second (expire in 120 s)
runtimes               list    runtime ms of the last 1000 completions (newest
                               first; trimmed back after 100 more)
resolve                list    "<id>|<status>": dependents still to resolve
periodic               zset    periodic schedule names; score = next tick (epoch s)
periodic:<name>        hash    one schedule: cron, every, tz, next_run_at,
                               last_run_at, last_task_id, task (the encoded
                               registration, see taskmesh/periodic.py)
queues                 set     names of every queue ever used
workers                zset    worker ids; score = last heartbeat ms
worker:<id>            hash    worker info (host, pid, queues, counters)
stats                  hash    monotonic counters (registered, completed, ...)
config                 hash    namespace settings (max_concurrent_tasks,
                               priority_aging_s, ...)
ratelimits             hash    rate key -> "<per_second> <burst>"
ratebucket:<rate key>  hash    token bucket of a limited rate key: tokens, ts
                               (ms of the last refill), parked (ids waiting)
seq                    string  global FIFO sequence counter
claims                 string  claim-token counter (fencing)
outbox                 list    cross-shard deliveries still to apply, JSON
                               [parent id, parent status, shard, dependent id]
remote_dependents:<id> set     "<shard>|<id>": dependents of <id> in other shards
applied:<id>           set     parents whose outcome <id> already applied (once)
early:<id>             hash    parent -> status delivered before <id> existed
capres                 hash    worker id -> cap slots held (shard 0, shards > 1)
events                 stream  capped replay of every event
events (channel)       pubsub  every event, JSON
done:<id> (channel)    pubsub  terminal status of one task, for waiters
control (channel)      pubsub  cancel signals to workers
=====================  ======  ===================================================
"""

from __future__ import annotations

from dataclasses import dataclass

from .models import TaskStatus


# Redis glob characters: a name holding one would make a pattern (the
# waiters' PSUBSCRIBE of ``done:*``, any SCAN MATCH) reach other namespaces
# or queues, e.g. namespace ``a*`` hearing every namespace starting with a.
GLOB_CHARS = "*?[]\\"

# queue:<name> scores are (255 - priority) * PRIORITY_SPAN + seq: written by
# queue_score in lua/prelude.lua (which has its own PRIORITY_SPAN, pinned
# equal by tests/test_keys.py); Python only reads bands of them.
PRIORITY_SPAN = 2 ** 44


def queue_band(priority: int) -> tuple[int, int]:
    """The queue-score range ``[low, high)`` of one priority."""
    low = (255 - priority) * PRIORITY_SPAN
    return low, low + PRIORITY_SPAN


def band_rank(score: float) -> int:
    """``255 - priority`` of a queue score: lower ranks are claimed first."""
    return int(score) // PRIORITY_SPAN


def validate_namespace(namespace: str) -> str:
    if not isinstance(namespace, str) or not namespace:
        raise ValueError("namespace must be a non-empty string")
    if any(ch in namespace for ch in "{}:\n\r "):
        raise ValueError(f"namespace {namespace!r} may not contain braces, ':' or spaces")
    if any(ch in namespace for ch in GLOB_CHARS):
        raise ValueError(f"namespace {namespace!r} may not contain glob characters * ? [ ] \\")
    return namespace


def validate_queue_name(queue: str) -> str:
    if not isinstance(queue, str) or not queue:
        raise ValueError("queue must be a non-empty string")
    if any(ch in queue for ch in "{},\n\r "):
        raise ValueError(f"queue name {queue!r} may not contain braces, commas or spaces")
    if any(ch in queue for ch in GLOB_CHARS):
        raise ValueError(f"queue name {queue!r} may not contain glob characters * ? [ ] \\")
    return queue


def validate_rate_key(rate_key: str) -> str:
    """Rate keys name key families (``ratebucket:<key>``) like queue names do,
    and may not hold glob characters, so a pattern never matches a family
    by accident."""
    if not isinstance(rate_key, str) or not rate_key:
        raise ValueError("rate_key must be a non-empty string")
    if any(ch in rate_key for ch in "{},\n\r ") or any(ch in rate_key for ch in GLOB_CHARS):
        raise ValueError(
            f"rate key {rate_key!r} may not contain braces, commas, spaces or * ? [ ] \\")
    return rate_key


@dataclass(frozen=True)
class Keys:
    """The keys of one shard of a namespace. Shard 0 (and every unsharded
    namespace) uses the hash tag ``{namespace}``; shard i > 0 of a sharded
    namespace uses the tag :func:`taskmesh.sharding.shard_tags` picked for it
    (``namespace:i:j``), so each shard is one slot of its own."""

    namespace: str
    shard_tag: str | None = None  # the hash tag; None is the namespace itself

    @property
    def prefix(self) -> str:
        return f"taskmesh:{{{self.shard_tag or self.namespace}}}:"

    def task(self, task_id: str) -> str:
        return f"{self.prefix}task:{task_id}"

    def dependents(self, task_id: str) -> str:
        return f"{self.prefix}dependents:{task_id}"

    def queue(self, name: str) -> str:
        return f"{self.prefix}queue:{name}"

    def wake(self, name: str) -> str:
        return f"{self.prefix}wake:{name}"

    def alarm(self, worker_id: str) -> str:
        return f"{self.prefix}alarm:{worker_id}"

    def scheduled(self, name: str) -> str:
        return f"{self.prefix}scheduled:{name}"

    def parked(self, name: str) -> str:
        return f"{self.prefix}parked:{name}"

    def rate_bucket(self, rate_key: str) -> str:
        return f"{self.prefix}ratebucket:{rate_key}"

    def done(self, status: TaskStatus | str) -> str:
        return f"{self.prefix}done:{status}"

    def byseq(self, status: TaskStatus | str) -> str:
        return f"{self.prefix}byseq:{status}"

    def tag(self, tag: str) -> str:
        return f"{self.prefix}tag:{tag}"

    def qcount(self, name: str) -> str:
        return f"{self.prefix}qcount:{name}"

    def rate(self, epoch_second: int) -> str:
        return f"{self.prefix}rate:{epoch_second}"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}worker:{worker_id}"

    def done_channel(self, task_id: str) -> str:
        return f"{self.prefix}done:{task_id}"

    def remote_dependents(self, task_id: str) -> str:
        return f"{self.prefix}remote_dependents:{task_id}"

    def applied(self, task_id: str) -> str:
        return f"{self.prefix}applied:{task_id}"

    def early(self, task_id: str) -> str:
        return f"{self.prefix}early:{task_id}"

    @property
    def outbox(self) -> str:
        return f"{self.prefix}outbox"

    @property
    def capres(self) -> str:
        return f"{self.prefix}capres"
    def periodic_schedule(self, name: str) -> str:
        return f"{self.prefix}periodic:{name}"

    @property
    def periodic(self) -> str:
        return f"{self.prefix}periodic"

    @property
    def tag_expiry(self) -> str:
        return f"{self.prefix}tag_expiry"

    @property
    def resolve(self) -> str:
        return f"{self.prefix}resolve"

    @property
    def runtimes(self) -> str:
        return f"{self.prefix}runtimes"

    @property
    def running(self) -> str:
        return f"{self.prefix}running"

    @property
    def waiting(self) -> str:
        return f"{self.prefix}waiting"

    @property
    def pending(self) -> str:
        return f"{self.prefix}pending"

    @property
    def queues(self) -> str:
        return f"{self.prefix}queues"

    @property
    def workers(self) -> str:
        return f"{self.prefix}workers"

    @property
    def stats(self) -> str:
        return f"{self.prefix}stats"

    @property
    def config(self) -> str:
        return f"{self.prefix}config"

    @property
    def ratelimits(self) -> str:
        return f"{self.prefix}ratelimits"

    @property
    def seq(self) -> str:
        return f"{self.prefix}seq"

    @property
    def claims(self) -> str:
        return f"{self.prefix}claims"

    @property
    def events(self) -> str:
        return f"{self.prefix}events"

    @property
    def events_channel(self) -> str:
        return f"{self.prefix}events"

    @property
    def control_channel(self) -> str:
        return f"{self.prefix}control"
