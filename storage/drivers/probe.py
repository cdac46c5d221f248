"""Which storage driver a store uses: asked for, recorded, or found by a probe at first use.

Order of precedence: ``--storage-driver``, then ``[storage] driver`` in the config, then
the store's record (``driver.json`` in the store), then a probe whose result becomes the
record, so later runs do not probe again. The probe tries, in order:

  overlay         kernel overlayfs mounted in a user namespace with ``userxattr``
  fuse-overlayfs  needs the program and a usable /dev/fuse
  vfs             always works

Each union driver is tried for real: a small tree with a whiteout and an opaque directory
is mounted the way a container's root will be, and the merged view is checked. Mounting
is the runtime's business (storage never mounts), so the caller passes a MountProbe that
does it; the CLI builds one from rootless.runtime. The kernel release is recorded too: a
different kernel is probed again, since what it offers may have changed.

A fallback says once per command what was lost and how to get it back.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rootless.context import Context
from rootless.errors import RootlessError, StorageError
from rootless.layout import Layout
from rootless.record import dataclass, field
from rootless.spec import Driver, RootfsPlan
from storage.atomic import write_atomic
from storage.drivers import DRIVERS, get
from storage.locks import FileLock

if TYPE_CHECKING:
    from storage.nsrunner import NamespaceRunner

RECORD_NAME = "driver.json"
CHECK = "storage.drivers.probe:check_merged"
_WARN_KEY = "storage-driver-fallback"


class MountProbe(Protocol):
    def __call__(self, plan: RootfsPlan, check: str) -> str | None:
        """Mount ``plan`` as the container's child would (a new user and mount namespace with
        the store's mapping, as namespace-root), call ``check`` ("package.module:function")
        there with ``target=plan.target``, unmount, and return None, or why the mount or
        the check failed (one line)."""
        ...


@dataclass(frozen=True)
class Choice:
    driver: Driver
    source: str  # "flag", "config", "recorded" or "probe"
    failures: tuple[tuple[str, str], ...] = field(default=())  # (driver, why) tried before it

    @property
    def fallback(self) -> bool:
        return bool(self.failures)


def record_path(layout: Layout) -> Path:
    return layout.root / RECORD_NAME


def kernel_release() -> str:
    return os.uname().release


# --------------------------------------------------------------------------- decision


def decide(results: Mapping[str, str | None]) -> tuple[Driver, tuple[tuple[str, str], ...]]:
    """The first driver in preference order that worked, and what failed before it.

    ``results`` maps a driver to None (works) or the reason it does not; a driver missing
    from it was not tried. vfs needs nothing, so it is the answer when all else failed.
    """
    failures: list[tuple[str, str]] = []
    for name in DRIVERS:
        if name == "vfs":
            break
        if name in results and results[name] is None:
            return name, tuple(failures)
        failures.append((name, results.get(name) or "not tried"))
    return "vfs", tuple(failures)


def lost(failures: tuple[tuple[str, str], ...], chosen: str, layout: Layout) -> tuple[str, str]:
    """The fallback warning (one line) and its hint: what was lost, why, and the fix."""
    again = "then `rootless system migrate` probes again"
    if chosen == "fuse-overlayfs":
        why = dict(failures).get("overlay", "")
        return (f"kernel overlay is not usable in a user namespace here ({why}): using the slower "
                f"fuse-overlayfs for {layout.root}",
                f"kernel overlay needs Linux 5.11+ and the store (--root) on ext4, xfs, btrfs or tmpfs; {again}")
    reasons = "; ".join(f"{d}: {why}" for d, why in failures)
    return (f"no overlay driver is usable ({reasons}): using vfs, which copies the whole image for "
            f"every container",
            f"install fuse-overlayfs and make /dev/fuse usable (`rootless doctor` shows how); {again}")


def warn_fallback(ctx: Context, choice: Choice) -> None:
    """Said once per store for each state (a different fallback warns again)."""
    msg, hint = lost(choice.failures, choice.driver, ctx.layout)
    key = f"{_WARN_KEY}:{choice.driver}:" + ",".join(d for d, _ in choice.failures)
    ctx.log.warn_once(key, msg, hint, store=True)


def read_record(layout: Layout) -> dict[str, Any] | None:
    """The recorded probe result, or None when there is none or it is unreadable."""
    try:
        data = json.loads(record_path(layout).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("driver") not in DRIVERS:
        return None
    return data


def write_record(layout: Layout, choice: Choice, results: Mapping[str, str | None]) -> None:
    data = {"driver": choice.driver, "kernel": kernel_release(), "probed": time.time(),
            "results": dict(results), "failures": [list(f) for f in choice.failures]}
    layout.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(record_path(layout), json.dumps(data, indent=1).encode() + b"\n", mode=0o644)


def forget(layout: Layout) -> None:
    """Drop the record: the next command probes again."""
    try:
        os.unlink(record_path(layout))
    except FileNotFoundError:
        pass


def _from_record(data: Mapping[str, Any]) -> Choice:
    failures = tuple((str(d), str(why)) for d, why in data.get("failures") or ()
                     if isinstance(d, str))
    return Choice(driver=data["driver"], source="recorded", failures=failures)


def select(ctx: Context, runner: NamespaceRunner, requested: str | None = None,
           mount_probe: MountProbe | None = None) -> Choice:
    """The driver to use: ``requested`` (the flag), the config, the record, or a new probe.

    A driver asked for by name must at least have what it needs without mounting (the
    fuse-overlayfs program); the mount itself is tried when the container starts. A probe
    needs ``mount_probe``; without one and without a record this raises.
    """
    for name, source in ((requested, "flag"), (ctx.config.storage_driver, "config")):
        if name:
            asked = get(name)
            missing = asked.unavailable()
            if missing:
                origin = ("--storage-driver" if source == "flag"
                          else f"[storage] driver in {ctx.config.source}")
                raise StorageError(f"storage driver {name} ({origin}) cannot be used: {missing}",
                                   hint=_fix(name) or "choose another driver")
            return Choice(driver=asked.name, source=source)
    data = read_record(ctx.layout)
    if data is not None and data.get("kernel") == kernel_release():
        choice = _from_record(data)
        why = get(choice.driver).unavailable()
        if why is not None:
            raise StorageError(f"this store's storage driver {choice.driver} (recorded in {record_path(ctx.layout)}) "
                               f"cannot be used now: {why}",
                               hint=f"{_fix(choice.driver) or 'restore it'}; or run `rootless system migrate` to "
                                    "probe this host again")
        if choice.fallback:
            warn_fallback(ctx, choice)
        return choice
    if mount_probe is None:
        raise StorageError("no storage driver is recorded for this store and none can be probed here",
                           hint="pass --storage-driver overlay|fuse-overlayfs|vfs")
    with FileLock(ctx.layout.locks / "driver-probe.lock"):
        data = read_record(ctx.layout)  # another command may have probed while we waited
        if data is not None and data.get("kernel") == kernel_release():
            choice = _from_record(data)
        else:
            results = probe(ctx, runner, mount_probe)
            driver, failures = decide(results)
            choice = Choice(driver=driver, source="probe", failures=failures)
            write_record(ctx.layout, choice, results)
            ctx.log.debug(f"storage driver probe: {results} → {driver}")
    if choice.fallback:
        warn_fallback(ctx, choice)
    return choice


def _fix(name: str) -> str | None:
    if name == "fuse-overlayfs":
        return ("install it (apt-get install fuse-overlayfs, dnf install fuse-overlayfs) and make /dev/fuse "
                "read-write for you (modprobe fuse)")
    return None


# --------------------------------------------------------------------------- probing


def probe(ctx: Context, runner: NamespaceRunner, mount_probe: MountProbe) -> dict[str, str | None]:
    """Try overlay, then fuse-overlayfs, for real; stop at the first that works.

    Returns driver → None (works) or the reason it does not.
    """
    results: dict[str, str | None] = {}
    name = f"rm-driver-probe-{os.urandom(6).hex()}"
    base = ctx.layout.tmp / name
    # A tmp entry with a lock nobody holds is removed by LayerStore.cleanup_tmp, so a
    # probe killed half-way leaves nothing for long.
    lock = FileLock(ctx.layout.locks / f"tmp-{name}.lock")
    lock.acquire()
    try:
        ctx.layout.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        tree = runner.call("storage.drivers.probe:make_tree", base=str(base))
        for name_ in DRIVERS:
            if name_ == "vfs":
                break
            driver = get(name_)
            why = driver.unavailable()
            if why is None and name_ == "overlay" and tree["format"] != "overlay":
                # what the layers are unpacked as too: aufs .wh. files, which the kernel ignores
                why = f"overlay whiteouts cannot be made in the store: {tree['reason']}"
            if why is None:
                plan = RootfsPlan(driver=driver.name, target=str(base / f"merged-{name_}"),
                                  lower=(str(base / "l2"), str(base / "l1")),
                                  upper=str(base / f"upper-{name_}"), work=str(base / f"work-{name_}"))
                try:
                    why = mount_probe(plan, CHECK)
                except RootlessError as e:
                    why = e.message
            results[name_] = why
            if why is None:
                break
    finally:
        try:
            runner.call("storage.layers:remove_tree", path=str(base))
            os.unlink(lock.path)
        except (RootlessError, OSError) as e:
            ctx.log.debug(f"remove the driver probe's {base}: {e}")
        lock.release()
    return results


def make_tree(base: str) -> dict[str, str]:
    """Namespace-root: the probe's layers and empty dirs. Returns the whiteout format made
    ("overlay", or "aufs" when the kernel or file system refused) and the refusal.

    l1 (lower): keep (\"lower\"), gone, opq/old.  l2 (upper layer): keep (\"upper\"), a
    whiteout of gone, opq marked opaque holding new.
    """
    b = Path(base)
    os.mkdir(b, 0o700)
    for d in ("l1", "l1/opq", "l2", "l2/opq", "upper-overlay", "work-overlay", "merged-overlay",
              "upper-fuse-overlayfs", "work-fuse-overlayfs", "merged-fuse-overlayfs"):
        os.mkdir(b / d, 0o755)
    (b / "l1/keep").write_text("lower\n")
    (b / "l1/gone").write_text("whited out\n")
    (b / "l1/opq/old").write_text("hidden by the opaque directory\n")
    (b / "l2/keep").write_text("upper\n")
    (b / "l2/opq/new").write_text("new\n")
    try:
        step = "mknod a 0:0 character device"
        os.mknod(b / "l2/gone", stat.S_IFCHR | 0o600, os.makedev(0, 0))
        step = "set the user.overlay.opaque xattr"
        os.setxattr(b / "l2/opq", "user.overlay.opaque", b"y")
        return {"format": "overlay", "reason": ""}
    except OSError as e:
        if os.path.lexists(b / "l2/gone"):
            os.unlink(b / "l2/gone")
        (b / "l2/.wh.gone").write_text("")
        (b / "l2/opq/.wh..wh..opq").write_text("")
        return {"format": "aufs", "reason": f"{step}: {e.strerror}"}


def check_merged(target: str) -> None:
    """Inside the mounted probe: the union shows layer order, whiteouts and opaque
    directories as overlayfs(5) defines them, and takes writes and deletions."""
    t = Path(target)

    def fail(what: str) -> StorageError:
        return StorageError(f"the merged view at {target} {what}")

    if (t / "keep").read_text() != "upper\n":
        raise fail("does not show the upper layer's file over the lower one")
    if os.path.lexists(t / "gone"):
        raise fail("ignores a whiteout")
    if sorted(os.listdir(t / "opq")) != ["new"]:
        raise fail(f"ignores an opaque directory (opq holds {sorted(os.listdir(t / 'opq'))})")
    (t / "written").write_text("x")
    os.unlink(t / "keep")
    os.mkdir(t / "made")
    if os.path.lexists(t / "keep") or (t / "written").read_text() != "x":
        raise fail("does not take writes and deletions")
