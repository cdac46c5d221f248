"""Test-only: mount a RootfsPlan the way the runtime's child will, and look inside.

``run_in_plan`` forks a child into a new user and mount namespace mapped like the store
(rootless.runtime.userns.fork_mapped), mounts the plan (overlay: mount(2) with
``userxattr``; fuse-overlayfs: the program; vfs: nothing, the copy is the root), calls a
function by name as namespace-root with ``target=plan.target``, unmounts, and returns
the function's JSON result. ``mount_probe`` is the same as a storage.drivers.probe.MountProbe.

The functions the driver tests run inside (``inspect``, ``mutate``) are here too.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import tempfile
from typing import Any

from rootless.errors import NamespaceError, StorageError
from rootless.runtime import idmap, syscalls, userns
from rootless.spec import RootfsPlan
from storage.drivers.fuse_overlayfs import find_program
from storage.nsrunner import resolve


def mount(plan: RootfsPlan) -> None:
    if plan.driver == "overlay":
        opts = (f"lowerdir={':'.join(plan.lower)},upperdir={plan.upper},workdir={plan.work},userxattr")
        syscalls.mount("overlay", plan.target, "overlay", 0, opts)
    elif plan.driver == "fuse-overlayfs":
        prog = find_program()
        if prog is None:
            raise StorageError("fuse-overlayfs is not installed")
        opts = f"lowerdir={':'.join(plan.lower)},upperdir={plan.upper},workdir={plan.work}"
        # Without -f it returns once the mount is in place and serves it from the background.
        cp = subprocess.run([prog, "-o", opts, plan.target], capture_output=True, text=True)
        if cp.returncode != 0:
            raise StorageError(f"fuse-overlayfs on {plan.target}: {cp.stderr.strip() or cp.returncode}")


def unmount(plan: RootfsPlan) -> None:
    if plan.driver != "vfs":
        syscalls.umount2(plan.target, 0)


def run_in_plan(plan: RootfsPlan, func: str, maps: idmap.IdMaps | None = None, **kwargs: Any) -> Any:
    """Mount ``plan`` in a fresh mapped user+mount namespace and return ``func(target=…, **kwargs)``."""
    maps = maps or idmap.current_store_maps()
    with tempfile.TemporaryFile() as out:
        fd = out.fileno()

        def child() -> None:
            # Our mounts must not propagate back to the host's mount namespace.
            syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
            try:
                mount(plan)
            except Exception as e:
                os.write(fd, json.dumps({"mount_error": str(e)}).encode())
                return
            try:
                result: dict[str, Any] = {"ok": resolve(func)(target=plan.target, **kwargs)}
            except Exception as e:
                result = {"error": f"{type(e).__name__}: {e}"}
            finally:
                unmount(plan)
            os.write(fd, json.dumps(result).encode())

        pid, failure = userns.fork_mapped(maps, syscalls.CLONE_NEWUSER | syscalls.CLONE_NEWNS, child)
        status = userns.wait_status(pid)
        if failure is not None:
            raise NamespaceError(f"{failure.stage}: {failure.message}")
        out.seek(0)
        data = out.read()
        if not data:
            raise NamespaceError(f"the plan's child exited with status {status} and said nothing")
        reply = json.loads(data)
    if "mount_error" in reply:
        raise StorageError(f"mount {plan.driver}: {reply['mount_error']}")
    if "error" in reply:
        raise StorageError(f"{func} in the {plan.driver} root: {reply['error']}")
    return reply["ok"]


def mount_probe(plan: RootfsPlan, check: str) -> str | None:
    """storage.drivers.probe.MountProbe over run_in_plan."""
    try:
        run_in_plan(plan, check)
    except (StorageError, NamespaceError) as e:
        return e.message
    return None


# --------------------------------------------------------------------------- inside the root

PATHS = [
    "data", "data/removed.txt", "data/keep.txt", "data/added.txt", "data/fifo",
    "opq", "opq/old1", "opq/sub", "opq/new",
    "links/target.txt", "links/hard", "links/rel", "links/abs", "links/dangling",
    "usr/local/bin/suid", "usr/local/bin/sgid",
    "owned/user1000", "owned/nobody", "owned/dir1000", "owned/dir1000/inner",
    "xattr/file", "sticky", "emptydir", "dev/mynull", "bin/busybox", "etc/passwd",
    "newfile", "newdir", "home/user",
]


def _facts(root: str, rel: str) -> dict[str, Any] | None:
    p = os.path.join(root, rel)
    try:
        st = os.lstat(p)
    except (FileNotFoundError, NotADirectoryError):  # NotADirectory: a parent is a whiteout
        return None
    fact: dict[str, Any] = {"type": stat.S_IFMT(st.st_mode), "mode": stat.S_IMODE(st.st_mode),
                            "uid": st.st_uid, "gid": st.st_gid, "ino": st.st_ino, "nlink": st.st_nlink,
                            "rdev": st.st_rdev}
    if stat.S_ISREG(st.st_mode) and st.st_size < 4096:
        with open(p, "rb") as f:
            fact["content"] = f.read().decode(errors="replace")
    elif stat.S_ISLNK(st.st_mode):
        fact["link"] = os.readlink(p)
    elif stat.S_ISDIR(st.st_mode):
        fact["entries"] = sorted(os.listdir(p))
    if not stat.S_ISLNK(st.st_mode):
        try:
            fact["xattrs"] = {n: os.getxattr(p, n).decode(errors="replace") for n in os.listxattr(p)
                              if n.startswith("user.")}
        except OSError:
            fact["xattrs"] = None
    return fact


def inspect(target: str) -> dict[str, Any]:
    """What the container would see: the facts of PATHS and the root's own attributes."""
    out = {rel: _facts(target, rel) for rel in PATHS}
    out["/"] = _facts(target, ".")
    return out


def mutate(target: str) -> dict[str, Any]:
    """What a container does to its root: write, modify, delete, chown; then inspect."""
    t = target
    with open(os.path.join(t, "newfile"), "w") as f:
        f.write("written in the container\n")
    os.chown(os.path.join(t, "newfile"), 1000, 1000)
    with open(os.path.join(t, "data/keep.txt"), "a") as f:
        f.write("appended\n")
    os.unlink(os.path.join(t, "data/added.txt"))
    os.unlink(os.path.join(t, "opq/new"))
    os.mkdir(os.path.join(t, "newdir"), 0o755)
    os.unlink(os.path.join(t, "owned/dir1000/inner"))
    os.rmdir(os.path.join(t, "owned/dir1000"))
    with open(os.path.join(t, "links/target.txt"), "a") as f:
        f.write("through one name\n")
    return inspect(target)


def read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
