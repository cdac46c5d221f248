"""D-Bus marshalling (the specification's "Message Protocol"), checked byte by byte."""

from __future__ import annotations

import struct

import pytest

from rootless.runtime import dbus


def m(sig: str, value: object) -> bytes:
    buf = bytearray()
    dbus.marshal(sig, value, buf)
    return bytes(buf)


def test_split() -> None:
    assert dbus.split("ssa(sv)a(sa(sv))") == ["s", "s", "a(sv)", "a(sa(sv))"]
    assert dbus.split("a{sv}yau") == ["a{sv}", "y", "au"]


def test_basic_types_and_alignment() -> None:
    assert m("s", "ab") == b"\x02\0\0\0ab\0"
    assert m("o", "/") == b"\x01\0\0\0/\0"
    assert m("g", "au") == b"\x02au\0"
    assert m("b", True) == b"\x01\0\0\0"
    assert m("t", 1) == struct.pack("<Q", 1)
    buf = bytearray(b"x")  # a byte, then a uint32: padded to 4
    dbus.marshal("u", 7, buf)
    assert bytes(buf) == b"x\0\0\0\x07\0\0\0"


def test_arrays_count_elements_not_the_padding_before_them() -> None:
    assert m("au", [1, 2]) == b"\x08\0\0\0" + b"\x01\0\0\0\x02\0\0\0"
    # an array of structs: the length, then padding to 8, then the elements
    assert m("a(yy)", [(1, 2)]) == b"\x02\0\0\0" + b"\0\0\0\0" + b"\x01\x02"
    assert m("a(sv)", []) == b"\0\0\0\0" + b"\0\0\0\0"
    assert m("v", ("b", True)) == b"\x01b\0\0\x01\0\0\0"


@pytest.mark.parametrize(("sig", "args"), [
    ("ssa(sv)a(sa(sv))", ("rootless-x.scope", "fail", [("PIDs", ("au", [10, 11])), ("Delegate", ("b", True)),
                                                      ("Slice", ("s", "user.slice"))], [])),
    ("ssau", ("u.scope", "/container", [4242])),
    ("a{sv}y", ({"a": ("u", 1), "b": ("s", "x")}, 9)),
])
def test_round_trip(sig: str, args: tuple[object, ...]) -> None:
    body = bytearray()
    for t, v in zip(dbus.split(sig), args, strict=True):
        dbus.marshal(t, v, body)
    back = dbus.unmarshal(sig, bytes(body))
    # variants come back as their values
    flat = [[(k, v[1]) for k, v in a] if isinstance(a, list) and a and isinstance(a[0], tuple) else a for a in args]
    if sig.startswith("a{sv}"):
        assert back == [{"a": 1, "b": "x"}, 9]
    else:
        assert back == flat


def test_message_header_parses_back() -> None:
    msg = dbus.message(5, "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                       "org.freedesktop.systemd1.Manager", "AttachProcessesToUnit", "ssau", ("u", "", [1]))
    assert msg[:4] == b"l\x01\x00\x01"
    assert dbus.parse(msg[:-1]) is None  # incomplete
    got = dbus.parse(msg + b"trailing")
    assert got is not None
    kind, fields, body, n = got
    assert (kind, n) == (1, len(msg))
    assert fields == {1: "/org/freedesktop/systemd1", 2: "org.freedesktop.systemd1.Manager",
                      3: "AttachProcessesToUnit", 6: "org.freedesktop.systemd1", 8: "ssau"}
    assert dbus.unmarshal("ssau", body) == ["u", "", [1]]
