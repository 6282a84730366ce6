"""Worker-side apps of the peer task systems.

Each module defines the peer's app (broker, queue, worker settings) the way
that system's users write one, configured from the environment
(``BENCH_PEER_URL``, ``BENCH_CONCURRENCY``) by :mod:`benchmarks.peers`, and
imported both by the producer (the driver) and by the peer's own worker
command. Task bodies come from :mod:`benchmarks.tasks`.
"""
