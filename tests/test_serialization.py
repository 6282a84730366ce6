"""Unit tests of the payload envelope (taskmesh.serialization.Codec)."""

from __future__ import annotations

import datetime
import decimal
import threading

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskmesh import (
    PayloadDecodeError,
    PayloadTooLargeError,
    SerializationError,
    SignatureError,
    TaskPriority,
    UnsafePayloadError,
)
from taskmesh.serialization import Codec, resolve_import
from tests import tasks

codec = Codec()
no_pickle = Codec(allow_pickle=False)


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


VALUES = [
    None, True, False, 0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 2**70, -(2**80), 1.5, float("inf"),
    "", "text", "ünïcødé", b"", b"\x00\xff", [], [1, [2, [3]]], {}, {"a": {"b": [1, 2]}},
    (), (1,), (1, (2, (3,))), [(1, 2), (3, 4)], {"t": (1, 2)}, {1: "int key"},
    {(1, 2): "tuple key"}, {1, 2, 3}, frozenset({4}), Point(1, 2), [Point(3, 4)],
    datetime.datetime(2024, 1, 2, 3, 4, 5), decimal.Decimal("1.10"), TaskPriority.HIGH,
    b"x" * 100_000,
]


@pytest.mark.parametrize("value", VALUES, ids=[repr(v)[:30] for v in VALUES])
def test_result_round_trip(value):
    decoded = codec.decode_result(codec.encode_result(value))
    assert decoded == value
    assert type(decoded) is type(value)


def test_tuples_stay_tuples_at_every_depth():
    value = {"a": (1, [2, (3, {"b": (4,)})])}
    decoded = codec.decode_result(codec.encode_result(value))
    assert type(decoded["a"]) is tuple
    assert type(decoded["a"][1]) is list
    assert type(decoded["a"][1][1]) is tuple
    assert type(decoded["a"][1][1][1]["b"]) is tuple


def test_task_round_trip_callable_and_import_string():
    func, args, kwargs = codec.decode_task(
        codec.encode_task(tasks.add, (1, (2, 3)), {"k": (4,)}))
    assert func is tasks.add  # pickled by reference: the module's own function
    assert args == [1, (2, 3)] and type(args[1]) is tuple
    assert kwargs == {"k": (4,)} and type(kwargs["k"]) is tuple

    func, args, kwargs = codec.decode_task(codec.encode_task("tests.tasks:add", (1, 2), {}))
    assert func == "tests.tasks:add"
    assert resolve_import(func) is tasks.add
    assert resolve_import("tests.tasks.add") is tasks.add


def test_task_round_trip_lambda_by_value():
    offset = 7
    func, args, _ = codec.decode_task(codec.encode_task(lambda x: x + offset, (1,), {}))
    assert func(*args) == 8


def test_import_string_payload_contains_no_pickle():
    envelope = codec.encode_task("tests.tasks:add", (1, "a", [2.5], {"k": None}), {"x": b"y"})
    # a --no-pickle worker accepts it
    func, args, kwargs = no_pickle.decode_task(envelope)
    assert func == "tests.tasks:add"
    assert args == [1, "a", [2.5], {"k": None}]
    assert kwargs == {"x": b"y"}


@settings(max_examples=150, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
    | st.binary(),
    lambda children: st.lists(children, max_size=4)
    | st.tuples(children, children)
    | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
))
def test_round_trip_property(value):
    decoded = codec.decode_result(codec.encode_result(value))
    assert decoded == value
    assert repr(decoded) == repr(value)  # same container types all the way down


# ---- --no-pickle --------------------------------------------------------------------

def test_no_pickle_refuses_pickled_func():
    envelope = codec.encode_task(tasks.add, (1, 2), {})
    with pytest.raises(UnsafePayloadError):
        no_pickle.decode_task(envelope)


def test_no_pickle_refuses_pickled_argument_and_result():
    envelope = codec.encode_task("tests.tasks:echo", (Point(1, 2),), {})
    with pytest.raises(UnsafePayloadError):
        no_pickle.decode_task(envelope)
    with pytest.raises(UnsafePayloadError):
        no_pickle.decode_result(codec.encode_result({"p": Point(1, 2)}))


def test_no_pickle_refusal_happens_before_unpickling():
    class Boom:
        def __reduce__(self):
            return (pytest.fail, ("unpickled under --no-pickle!",))

    envelope = codec.encode_task("tests.tasks:echo", (Boom(),), {})
    with pytest.raises(UnsafePayloadError):
        no_pickle.decode_task(envelope)


def test_no_pickle_yields_lists_for_tuples():
    envelope = codec.encode_task("tests.tasks:echo", ((1, 2), [3, (4,)]), {"t": (5,)})
    _, args, kwargs = no_pickle.decode_task(envelope)
    assert args == [[1, 2], [3, [4]]]
    assert kwargs == {"t": [5]}
    assert no_pickle.decode_result(codec.encode_result((1, (2,)))) == [1, [2]]
    # and a no-pickle codec encodes tuples as plain lists
    assert no_pickle.decode_result(no_pickle.encode_result((1, 2))) == [1, 2]
    assert codec.decode_result(no_pickle.encode_result((1, 2))) == [1, 2]


def test_no_pickle_cannot_encode_arbitrary_objects():
    with pytest.raises(SerializationError) as excinfo:
        no_pickle.encode_result(Point(1, 2))
    assert excinfo.value.part == "result"


# ---- signatures ---------------------------------------------------------------------

signed = Codec(secret=b"s3cret")


def test_signed_round_trip():
    envelope = signed.encode_task("tests.tasks:add", (1, 2), {})
    assert signed.decode_task(envelope) == ("tests.tasks:add", [1, 2], {})
    assert signed.decode_result(signed.encode_result({"r": (1,)})) == {"r": (1,)}


def test_unsigned_payload_refused_with_secret():
    with pytest.raises(SignatureError):
        signed.decode_task(codec.encode_task("tests.tasks:add", (1, 2), {}))
    with pytest.raises(SignatureError):
        signed.decode_result(codec.encode_result(1))


def test_wrong_secret_refused():
    other = Codec(secret=b"other")
    with pytest.raises(SignatureError):
        signed.decode_task(other.encode_task("tests.tasks:add", (1, 2), {}))


def test_tampered_body_refused():
    envelope = signed.encode_task("tests.tasks:add", (1, 2), {})
    version, body, sig = msgpack.unpackb(envelope, raw=False)
    evil_body = body.replace(b"tests.tasks:add", b"tests.tasks:ech")
    assert evil_body != body
    with pytest.raises(SignatureError):
        signed.decode_task(msgpack.packb([version, evil_body, sig], use_bin_type=True))
    # a flipped signature byte too
    bad_sig = bytes([sig[0] ^ 1]) + sig[1:]
    with pytest.raises(SignatureError):
        signed.decode_task(msgpack.packb([version, body, bad_sig], use_bin_type=True))
    # stripped signature
    with pytest.raises(SignatureError):
        signed.decode_task(msgpack.packb([version, body, None], use_bin_type=True))


def test_signature_checked_before_unpickling():
    class Boom:
        def __reduce__(self):
            return (pytest.fail, ("unpickled before the signature check!",))

    envelope = Codec(secret=b"other").encode_task("tests.tasks:echo", (Boom(),), {})
    with pytest.raises(SignatureError):
        signed.decode_task(envelope)


def test_codec_without_secret_accepts_signed_payloads():
    envelope = signed.encode_task("tests.tasks:add", (1, 2), {})
    assert codec.decode_task(envelope) == ("tests.tasks:add", [1, 2], {})


# ---- garbage -------------------------------------------------------------------------

@pytest.mark.parametrize("garbage", [
    b"", b"\xc1", b"not msgpack at all \xff\xfe", msgpack.packb("a string"),
    msgpack.packb([1, 2]), msgpack.packb([99, b"body", None]), msgpack.packb([1, "str", None]),
    msgpack.packb([1, b"\xc1", None]), msgpack.packb({"f": "x"}),
])
def test_garbage_raises_payload_decode_error(garbage):
    with pytest.raises(PayloadDecodeError):
        codec.decode_task(garbage)
    with pytest.raises(PayloadDecodeError):
        codec.decode_result(garbage)


def test_envelope_without_function_is_a_decode_error():
    body = msgpack.packb({"a": [1]}, use_bin_type=True)
    with pytest.raises(PayloadDecodeError):
        codec.decode_task(msgpack.packb([1, body, None], use_bin_type=True))
    body = msgpack.packb({"f": 42, "a": [], "k": {}}, use_bin_type=True)
    with pytest.raises(PayloadDecodeError):
        codec.decode_task(msgpack.packb([1, body, None], use_bin_type=True))


def test_unknown_extension_type_is_a_decode_error():
    body = msgpack.packb({"f": "m:f", "a": [msgpack.ExtType(42, b"?")], "k": {}},
                         use_bin_type=True)
    with pytest.raises(PayloadDecodeError):
        codec.decode_task(msgpack.packb([1, body, None], use_bin_type=True))


# ---- encoding errors -------------------------------------------------------------------

def test_encode_errors_name_the_part():
    lock = threading.Lock()
    with pytest.raises(SerializationError) as excinfo:
        codec.encode_task(tasks.echo, (1, lock), {})
    assert excinfo.value.part == "args[1]"
    with pytest.raises(SerializationError) as excinfo:
        codec.encode_task(tasks.echo, (), {"x": lock})
    assert excinfo.value.part == "kwargs['x']"
    with pytest.raises(SerializationError) as excinfo:
        codec.encode_task(lambda: lock, (), {})
    assert excinfo.value.part == "func"
    with pytest.raises(SerializationError) as excinfo:
        codec.encode_result(lock)
    assert excinfo.value.part == "result"


def test_max_payload_bytes():
    small = Codec(max_payload_bytes=200)
    small.encode_task("tests.tasks:echo", ("x" * 10,), {})
    with pytest.raises(PayloadTooLargeError) as excinfo:
        small.encode_task("tests.tasks:echo", ("x" * 500,), {})
    assert excinfo.value.limit == 200 and excinfo.value.size > 200
    assert isinstance(excinfo.value, SerializationError)
