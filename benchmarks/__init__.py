"""taskmesh's benchmark suite (SPEC §6): ``python -m benchmarks``.

Imports nothing beyond the standard library at package level so peer
systems can run :mod:`benchmarks.driver` from their own interpreter
(``--peer-python``) without taskmesh's dependencies. See README.md here.
"""
