"""Fuzzing the payload codec (SPEC §7, §10 Security).

Whatever bytes a worker or producer reads from Redis, decoding either returns
a value or raises one of the three documented TaskmeshErrors — never a stray
msgpack/pickle/Unicode/recursion error that an ``except TaskmeshError`` would
miss. Pickle is refused (``allow_pickle=False``) wherever bytes are random:
unpickling arbitrary bytes is code execution by design, which is exactly why
--no-pickle and signatures exist.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import signal
import subprocess
import sys

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskmesh import (
    PayloadDecodeError,
    SerializationError,
    SignatureError,
    TaskmeshError,
    UnsafePayloadError,
)
from taskmesh.serialization import EXT_PICKLE, EXT_TUPLE, VERSION, Codec

DECODE_ERRORS = (PayloadDecodeError, SignatureError, UnsafePayloadError)
FUZZ = settings(max_examples=500, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
ROUND_TRIP = settings(max_examples=150, deadline=None,
                      suppress_health_check=[HealthCheck.too_slow])
STRUCTURED = settings(max_examples=300, deadline=None,
                      suppress_health_check=[HealthCheck.too_slow])
SECRET = b"s3"

CODECS = {
    "no-secret": Codec(allow_pickle=False),
    "secret": Codec(secret=SECRET, allow_pickle=False),
}


def test_decode_errors_share_the_root():
    for exc in DECODE_ERRORS:
        assert issubclass(exc, TaskmeshError)


def decodes_or_refuses(codec: Codec, raw: bytes) -> None:
    for decode in (codec.decode_task, codec.decode_result):
        try:
            decode(raw)
        except DECODE_ERRORS:
            pass


# ---- unstructured: random bytes -------------------------------------------------------

@pytest.mark.parametrize("codec", list(CODECS.values()), ids=list(CODECS))
@FUZZ
@given(raw=st.binary(max_size=512))
def test_random_bytes(codec, raw):
    decodes_or_refuses(codec, raw)


@FUZZ
@given(raw=st.binary(max_size=512))
def test_random_bytes_default_codec_with_secret(raw):
    """Pickle allowed, but a secret is set: random bytes never get past the
    signature check, so they never reach cloudpickle."""
    decodes_or_refuses(Codec(secret=SECRET), raw)


# ---- structured: valid outer envelope, random body ------------------------------------------

def sign(body: bytes) -> bytes:
    return hmac.new(SECRET, body, hashlib.sha256).digest()


def seal(body: bytes, signed: bool) -> bytes:
    return msgpack.packb([VERSION, body, sign(body) if signed else None], use_bin_type=True)


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
@FUZZ
@given(body=st.binary(max_size=512))
def test_envelope_with_random_body(signed, body):
    raw = seal(body, signed)
    decodes_or_refuses(Codec(allow_pickle=False), raw)
    decodes_or_refuses(Codec(secret=SECRET, allow_pickle=False), raw)


# msgpack-shaped bodies: random trees that include extension types, so the
# ext hook (tuples, refused pickles, unknown codes) and the task-shape checks
# get exercised, not just the msgpack parser.
def _ext(children):
    return st.one_of(
        st.builds(lambda items: msgpack.ExtType(EXT_TUPLE, msgpack.packb(items, use_bin_type=True)),
                  st.lists(children, max_size=3)),
        st.builds(lambda data: msgpack.ExtType(EXT_TUPLE, data), st.binary(max_size=16)),
        st.builds(lambda data: msgpack.ExtType(EXT_PICKLE, data), st.binary(max_size=16)),
        st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)),
    )


MSGPACK_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(max_size=8),
    st.binary(max_size=8),
)
MSGPACK_TREES = st.recursive(
    MSGPACK_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=4), st.integers(-5, 5)), children, max_size=4),
        _ext(children),
    ),
    max_leaves=12,
)
FUNCS = st.one_of(st.just("tests.tasks:add"), st.text(max_size=12), MSGPACK_TREES)
TASK_BODIES = st.one_of(
    MSGPACK_TREES,
    st.fixed_dictionaries({"f": FUNCS}, optional={"a": MSGPACK_TREES, "k": MSGPACK_TREES}),
)


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
@STRUCTURED
@given(tree=TASK_BODIES)
def test_envelope_with_msgpack_shaped_body(signed, tree):
    raw = seal(msgpack.packb(tree, use_bin_type=True), signed)
    for codec in (Codec(allow_pickle=False), Codec(secret=SECRET, allow_pickle=False)):
        try:
            func, args, kwargs = codec.decode_task(raw)
        except DECODE_ERRORS:
            pass
        else:
            assert isinstance(func, str) or callable(func)
            assert isinstance(args, list) and isinstance(kwargs, dict)
        try:
            codec.decode_result(raw)
        except DECODE_ERRORS:
            pass


@ROUND_TRIP
@given(header=st.lists(MSGPACK_TREES, max_size=4))
def test_random_outer_headers(header):
    raw = msgpack.packb(header, use_bin_type=True)
    decodes_or_refuses(Codec(allow_pickle=False), raw)
    decodes_or_refuses(Codec(secret=SECRET, allow_pickle=False), raw)


# Deep nesting runs in a child process: if decoding overflows the C stack it
# takes down the process (SIGSEGV), which must not take pytest with it.
_DEEP_SCRIPT = """
import sys
import msgpack
from taskmesh import PayloadDecodeError, SerializationError
from taskmesh.serialization import Codec, EXT_TUPLE

kind, depth = sys.argv[1], int(sys.argv[2])
if kind == "value":  # a legitimate nested tuple, through the public encoder
    value = ()
    for _ in range(depth):
        value = (value, 1)
    codec = Codec()
    try:
        raw = codec.encode_result(value)
    except SerializationError:
        print("refused at encode")
        sys.exit(0)
    try:
        ok = codec.decode_result(raw) == value
    except PayloadDecodeError:
        ok = True
    print("round trip ok" if ok else "round trip WRONG")
    sys.exit(0 if ok else 1)
body = msgpack.packb([], use_bin_type=True)  # hand-made: Ext(TUPLE) inside Ext(TUPLE)...
for _ in range(depth):
    body = msgpack.packb(msgpack.ExtType(EXT_TUPLE, body), use_bin_type=True)
raw = msgpack.packb([1, body, None], use_bin_type=True)
for codec in (Codec(), Codec(allow_pickle=False)):
    for decode in (codec.decode_task, codec.decode_result):
        try:
            decode(raw)
        except PayloadDecodeError:
            pass
print("no crash")
"""


def _run_deep(kind: str, depth: int) -> None:
    proc = subprocess.run([sys.executable, "-c", _DEEP_SCRIPT, kind, str(depth)],
                          check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, (
        f"decoding {kind} nested {depth} deep killed the process (rc={proc.returncode}, "
        f"{'SIGSEGV' if proc.returncode == -signal.SIGSEGV else 'error'}):\n"
        f"{proc.stdout[-1000:]}{proc.stderr[-1500:]}")


@pytest.mark.parametrize("depth", [100, 200, 1000, 5000])
def test_deeply_nested_ext_tuples_are_a_decode_error_not_a_crash(depth):
    """~200 nested Ext(TUPLE) records (about 1 KB) must not crash the decoder."""
    _run_deep("envelope", depth)


@pytest.mark.parametrize("depth", [100, 200, 400])
def test_deeply_nested_tuple_value_round_trips_or_is_refused(depth):
    """A legitimate nested tuple: either it round-trips, or encode/decode
    refuses it with a TaskmeshError; never a crash of the reading process."""
    _run_deep("value", depth)


# ---- property: results round-trip exactly -------------------------------------------------

HASHABLE_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20),
    st.binary(max_size=20),
)
VALUES = st.recursive(
    HASHABLE_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.lists(children, max_size=5).map(tuple),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers(), st.binary(max_size=8),
                                  st.tuples(st.integers(), st.text(max_size=8))),
                        children, max_size=5),
    ),
    max_leaves=15,
)


def same(a, b) -> bool:
    """Exact equality, types included (1 != 1.0 != True, tuple != list)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return (len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
                and all(same(a[k], b[k]) for k in a))
    return a == b


@pytest.mark.parametrize("secret", [None, SECRET], ids=["plain", "signed"])
@ROUND_TRIP
@given(value=VALUES)
def test_results_round_trip_exactly(secret, value):
    codec = Codec(secret=secret)
    decoded = codec.decode_result(codec.encode_result(value))
    assert same(decoded, value), (decoded, value)


@ROUND_TRIP
@given(value=VALUES)
def test_tasks_round_trip_exactly(value):
    codec = Codec(secret=SECRET)
    func, args, kwargs = codec.decode_task(
        codec.encode_task("tests.tasks:echo", (value, value), {"v": value}))
    assert func == "tests.tasks:echo"
    assert same(args, [value, value]) and same(kwargs, {"v": value})


def as_lists(value):
    if isinstance(value, (list, tuple)):
        return [as_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: as_lists(v) for k, v in value.items()}
    return value


MSGPACK_INTS = st.integers(-(2**63), 2**64 - 1)
NO_PICKLE_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), MSGPACK_INTS, st.floats(allow_nan=False),
              st.text(max_size=20), st.binary(max_size=20)),
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.lists(children, max_size=5).map(tuple),
        st.dictionaries(st.one_of(st.text(max_size=8), MSGPACK_INTS, st.binary(max_size=8)),
                        children, max_size=5),
    ),
    max_leaves=15,
)


@ROUND_TRIP
@given(value=NO_PICKLE_VALUES)
def test_no_pickle_results_round_trip_with_tuples_as_lists(value):
    """--no-pickle: plain msgpack both ways, tuples arrive as lists."""
    codec = Codec(secret=SECRET, allow_pickle=False)
    decoded = codec.decode_result(codec.encode_result(value))
    assert same(decoded, as_lists(value)), (decoded, value)


@ROUND_TRIP
@given(value=st.one_of(st.integers(min_value=2**64), st.integers(max_value=-(2**63) - 1),
                       st.sets(st.integers(), min_size=1), st.complex_numbers(),
                       st.frozensets(st.text())))
def test_no_pickle_refuses_what_msgpack_cannot_carry(value):
    codec = Codec(allow_pickle=False)
    with pytest.raises(SerializationError) as info:
        codec.encode_result([value])
    assert info.value.part == "result"
