"""A store-namespace worker: ``python -S -m rootless.runtime.nsworker``, driven by userns.StoreNamespace.

Protocol (JSON lines; the worker's own stdin/stdout, moved off fds 0/1 so a called
function that prints cannot corrupt it; stderr is left to the parent's for debugging):

  worker → {"ready": pid}              after unshare(CLONE_NEWUSER); the parent now writes our maps
  parent → {"go": {"sys_path": [...]}} maps are written
  worker → {"ok": {...}}               we are uid/gid 0 in the namespace
  parent → {"func": "pkg.mod:fn", "kwargs": {...}}
  worker → {"ok": result} | {"error": {...}}   the error object of rootless.runtime.childerr

EOF on stdin ends the worker. Imports stay minimal: the time to "ready" is paid by
every pull that unpacks layers.
"""

from __future__ import annotations

import os
import sys

# typing and json cost milliseconds before "ready"; json is imported while the
# parent runs newuidmap, typing only by the type checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, BinaryIO

PARENT_ENV = "ROOTLESS_NSWORKER_PARENT"
_SIGKILL = 9


def whoami() -> dict[str, Any]:
    """Self-test: the credentials and maps as seen from inside the namespace."""
    with open("/proc/self/uid_map") as u, open("/proc/self/gid_map") as g:
        uid_map, gid_map = u.read(), g.read()
    return {
        "pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid(), "euid": os.geteuid(),
        "egid": os.getegid(), "groups": os.getgroups(), "uid_map": uid_map, "gid_map": gid_map,
    }


def _error(e: BaseException, with_traceback: bool = True) -> dict[str, Any]:
    from rootless.runtime import childerr

    return childerr.describe("call", e, with_traceback)


def _send(out: BinaryIO, obj: Any) -> None:
    import json

    out.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
    out.flush()


def _call(spec: str, kwargs: dict[str, Any]) -> Any:
    import importlib

    modname, sep, fname = spec.partition(":")
    if not sep or not modname or not fname:
        raise ValueError(f"bad function name {spec!r}: expected 'package.module:function'")
    fn: Any = importlib.import_module(modname)
    for part in fname.split("."):
        fn = getattr(fn, part)
    return fn(**kwargs)


def become_root() -> None:
    """setres[ug]id 0 and no supplementary groups, in a freshly mapped user namespace (shared
    by every child that becomes its root: here, userns and the container's first process)."""
    # Our kernel ids already map to 0 once the parent wrote the maps; setres*id makes
    # the saved ids agree, and dropping supplementary groups removes the unmapped
    # ones (shown as the overflow gid). setgroups(2) is refused with EPERM when the
    # single-id fallback had to write "deny" to /proc/self/setgroups.
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    try:
        os.setgroups([])
    except PermissionError:
        pass


def main() -> int:
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)

    from rootless.runtime import syscalls

    # prctl(2): the signal follows the death of the parent *thread* that forked us;
    # StoreNamespace forks from a thread that lives as long as it does.
    syscalls.set_pdeathsig(_SIGKILL)
    parent = os.environ.pop(PARENT_ENV, None)
    if parent is not None and os.getppid() != int(parent):
        return 1  # the parent died before the death signal was armed
    try:
        syscalls.unshare(syscalls.CLONE_NEWUSER)
    except OSError as e:
        _send(proto_out, {"error": _error(e, with_traceback=False)})
        return 1
    proto_out.write(b'{"ready":%d}\n' % os.getpid())
    proto_out.flush()
    import json

    line = proto_in.readline()
    if not line:
        return 0
    go = json.loads(line).get("go")
    if go is None:
        return 1
    for p in go.get("sys_path", ()):
        if p not in sys.path:
            sys.path.append(p)
    try:
        become_root()
    except OSError as e:
        _send(proto_out, {"error": _error(e, with_traceback=False)})
        return 1
    _send(proto_out, {"ok": {"pid": os.getpid()}})

    for line in proto_in:
        try:
            req = json.loads(line)
            result = _call(req["func"], req.get("kwargs") or {})
            reply = json.dumps({"ok": result}, separators=(",", ":")).encode() + b"\n"
        except Exception as e:  # every failure goes back to the caller, typed by name
            reply = json.dumps({"error": _error(e)}, separators=(",", ":")).encode() + b"\n"
        proto_out.write(reply)
        proto_out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
