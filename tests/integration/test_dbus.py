"""rootless.runtime.dbus against the reference bus, dbus-daemon(1), as the unprivileged user.

The daemon checks every message it receives against the specification and drops the
connection of a client that sends a malformed one: a named error back proves the call,
with systemd's StartTransientUnit signature, was well formed.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rootless.runtime import dbus

pytestmark = pytest.mark.integration

BUS = ("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus")


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[str]:
    exe = shutil.which("dbus-daemon")
    if exe is None:
        pytest.fail("dbus-daemon is not installed (apt-get install dbus-daemon)")
    sock = tmp_path / "bus"
    p = subprocess.Popen([exe, "--session", "--nofork", "--nopidfile", f"--address=unix:path={sock}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert p.poll() is None and time.monotonic() < deadline, "dbus-daemon did not start"
            time.sleep(0.01)
        yield f"unix:path={sock},guid=0"
    finally:
        p.terminate()
        p.wait()


def test_call_and_reply(bus: str) -> None:
    sig, body = dbus.call(bus, *BUS, "ListNames")
    assert sig == "as" and "org.freedesktop.DBus" in dbus.unmarshal(sig, body)[0]
    sig, body = dbus.call(bus, *BUS, "NameHasOwner", "s", ("org.freedesktop.DBus",))
    assert dbus.unmarshal(sig, body) == [True]


def test_error_reply_is_raised_with_its_name(bus: str) -> None:
    with pytest.raises(dbus.DBusError) as e:
        dbus.call(bus, *BUS, "GetNameOwner", "s", ("org.example.nobody",))
    assert e.value.name == "org.freedesktop.DBus.Error.NameHasNoOwner" and "org.example.nobody" in e.value.message


def test_start_transient_unit_call_is_well_formed(bus: str) -> None:
    with pytest.raises(dbus.DBusError) as e:
        dbus.call(bus, "org.example.NoSystemd", "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager",
                  "StartTransientUnit", "ssa(sv)a(sa(sv))",
                  ("rootless-x.scope", "fail", [("Description", ("s", "x")), ("PIDs", ("au", [1, 2])),
                                                ("Delegate", ("b", True))], []))
    assert e.value.name == "org.freedesktop.DBus.Error.ServiceUnknown", e.value


def test_no_bus(tmp_path: Path) -> None:
    with pytest.raises(dbus.DBusError, match="cannot connect"):
        dbus.call(f"unix:path={tmp_path}/none", *BUS, "ListNames")
