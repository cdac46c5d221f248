"""``rootless doctor`` and ``rootless info``: what this host gives an unprivileged user, and how to fix it.

Each check is a real probe where one is cheap (a forked child that unshares, maps and
mounts), not a guess from version numbers. The whole doctor takes about half a second.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rootless.context import Context
from rootless.errors import RootlessError
from rootless.layout import Layout
from rootless.runtime import idmap, syscalls, userns

_FS_NAMES = {
    0xEF53: "ext4", 0x58465342: "xfs", 0x9123683E: "btrfs", syscalls.TMPFS_MAGIC: "tmpfs",
    syscalls.NFS_SUPER_MAGIC: "nfs", syscalls.OVERLAYFS_SUPER_MAGIC: "overlay", 0x2FC12FC1: "zfs",
    syscalls.FUSE_SUPER_MAGIC: "fuse", 0x6E667364: "nfsd", 0xFF534D42: "cifs", 0xFE534D42: "smb2",
    0x01161970: "gfs2", 0x5346414F: "afs", 0x47504653: "gpfs", 0x00C36400: "ceph",
}
_DELEGATE_FIX = (
    "as root, create /etc/systemd/system/user@.service.d/delegate.conf containing\n"
    "[Service]\nDelegate=cpu cpuset io memory pids\n"
    "then run `systemctl daemon-reload` and log in again"
)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    needed: bool  # False: an optional feature; failing it degrades, never blocks
    detail: str
    fix: str | None = None


# --- helpers ----------------------------------------------------------------------------


def _fork_check(fn: Callable[[], None]) -> str | None:
    """Run *fn* in a forked child (it may unshare and mount freely); its error text, or None."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 0
        try:
            fn()
        except OSError as e:
            os.write(w, syscalls.describe(e).encode())
            code = 1
        except BaseException as e:
            os.write(w, f"{type(e).__name__}: {e}".encode())
            code = 1
        os._exit(code)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 4096):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if chunks:
        return b"".join(chunks).decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        return f"the test process failed (wait status {status})"
    return None


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _mount_fstype(path: Path) -> str | None:
    """The file system type /proc/self/mountinfo gives the mount holding *path* (its name, as
    mount(8) shows it: ext4, tmpfs, ramfs, fuse.sshfs), or None."""
    try:
        real = os.path.realpath(path)
        with open("/proc/self/mountinfo") as f:
            rows = f.read().splitlines()
    except OSError:
        return None
    best, kind = "", None
    for row in rows:
        left, _, right = row.partition(" - ")
        fields = left.split()
        if len(fields) < 5 or not right:
            continue
        # proc(5): the mount point is field 5, octal-escaped (\040 for a space)
        point = fields[4].encode().decode("unicode_escape")
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, right.split()[0]
    return kind


def fs_name(path: Path) -> tuple[int | None, str]:
    """The file system holding *path* (or its nearest existing parent): magic and name."""
    where = _existing(path)
    try:
        magic: int | None = syscalls.statfs_type(str(where))
    except OSError:
        magic = None
    name = _mount_fstype(where) or (_FS_NAMES.get(magic, f"unknown ({magic:#x})") if magic is not None
                                    else "unknown")
    return magic, name


def _write_own_maps(uid: int, gid: int) -> None:
    """In a child that just unshared: map root to our own ids, which needs no helper.

    The ids must be taken before unshare (afterwards they read as the overflow id), and
    setgroups must be denied before an unprivileged gid_map write (user_namespaces(7)).
    """
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"0 {uid} 1\n")
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"0 {gid} 1\n")


def probe_drivers(ctx: Context) -> dict[str, str | None] | str:
    """The storage driver probe a first `run` makes (storage.drivers.probe: a real tree with a
    whiteout and an opaque directory, mounted as the container's child mounts it, in the store's
    user namespace), on the store's file system; driver → None (works) or why not. A string when
    nothing could be probed. The scratch store is removed; the real one is not touched."""
    import shutil
    import tempfile

    from rootless.context import Log
    from rootless.runtime.run import LazyStoreNamespace, mount_probe
    from storage.drivers import probe as driver_probe

    root = ctx.layout.root
    base = ctx.layout.tmp if root.is_dir() else _existing(root)
    try:
        if base == ctx.layout.tmp:
            base.mkdir(exist_ok=True, mode=0o700)
        scratch = Path(tempfile.mkdtemp(prefix=".rootless-doctor-", dir=base))
    except OSError as e:
        return f"create a test directory in {base}: {e.strerror}"
    try:
        lay = Layout(root=scratch, runroot=ctx.layout.runroot)
        lay.ensure_store()
        sctx = Context(config=ctx.config, layout=lay, log=Log(level=40))
        with LazyStoreNamespace(sctx) as runner:
            return driver_probe.probe(sctx, runner, mount_probe)
    except RootlessError as e:
        return e.message
    except OSError as e:
        return f"{e.filename or scratch}: {e.strerror}"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def fuse_usable() -> tuple[bool, str]:
    try:
        fd = os.open("/dev/fuse", os.O_RDWR)
    except OSError as e:
        return False, f"open /dev/fuse: {e.strerror}"
    os.close(fd)
    return True, "/dev/fuse opens read-write"


def _map_text(maps: tuple[idmap.IdMapping, ...]) -> str:
    return ", ".join(f"{m.container_id}→{m.host_id} ({m.size})" for m in maps)


# --- the checks -------------------------------------------------------------------------


def _subid_check(kind: str, path: Path, user: str, uid: int) -> Check:
    try:
        ranges = idmap.read_subid(path, user, uid)
    except RootlessError as e:
        return Check(f"sub{kind} range", False, True, e.message, e.hint)
    if ranges:
        text = ", ".join(f"{r.start}-{r.end} ({r.count} ids)" for r in ranges)
        total = sum(r.count for r in ranges)
        if total < idmap.DEFAULT_RANGE_SIZE:
            # Images use IDs up to 65534 (nobody): an owner the map cannot hold becomes root.
            return Check(f"sub{kind} range", False, False,
                         f"{user} in {path}: {text}: under {idmap.DEFAULT_RANGE_SIZE} ids, so files of "
                         f"image owners above {total} are owned by the container's root instead",
                         f"as root: {idmap.usermod_fix(user)}")
        return Check(f"sub{kind} range", True, True, f"{user} in {path}: {text}")
    # Runs and pulls still work (single-id mapping), so this degrades rather than blocks.
    return Check(f"sub{kind} range", False, False,
                 f"no range for {user} (uid {uid}) in {path}: single-id mapping, files of other owners "
                 "in images are owned by the container's root (you) instead",
                 f"as root: {idmap.usermod_fix(user)}")


def _helper_check(name: str) -> Check:
    path = idmap.find_helper(name)
    if path is None:
        return Check(name, False, True, f"{name} not found", "as root: apt-get install uidmap")
    if not idmap.helper_privileged(path):
        return Check(name, False, True, f"{path} is neither setuid root nor has file capabilities",
                     f"as root: chmod u+s {path} (or reinstall the uidmap package)")
    how = "setuid root" if os.stat(path).st_mode & stat.S_ISUID else "file capabilities"
    return Check(name, True, True, f"{path} ({how})")


def _sysctl_checks() -> list[Check]:
    out = []
    fixes = {b.sysctl: b.fix for b in userns.userns_blockers()}
    value = userns.read_sysctl("user.max_user_namespaces")
    if value is not None:
        ok = value != "0"
        out.append(Check("user.max_user_namespaces", ok, True, f"user.max_user_namespaces = {value}",
                         None if ok else fixes.get("user.max_user_namespaces")))
    for name, want in (("kernel.unprivileged_userns_clone", "1"),
                       ("kernel.apparmor_restrict_unprivileged_userns", "0")):
        value = userns.read_sysctl(name)
        if value is None:
            continue  # the kernel lacks the switch: nothing restricts us through it
        ok = value == want
        out.append(Check(name, ok, True, f"{name} = {value}", None if ok else fixes.get(name)))
    return out


def _userns_check() -> Check:
    err = _fork_check(lambda: syscalls.unshare(syscalls.CLONE_NEWUSER))
    if err is None:
        return Check("user namespace", True, True, "an unprivileged process can create a user namespace")
    hint = next(iter(b.fix for b in userns.userns_blockers()), None)
    return Check("user namespace", False, True, err,
                 hint or "run on the host, not inside a container or chroot that forbids user namespaces")


def _mapping_check(maps: idmap.IdMaps, user: str) -> Check:
    def child() -> None:
        if os.getuid() != 0 or os.getgid() != 0:
            raise RuntimeError(f"uid {os.getuid()} gid {os.getgid()} after mapping, not 0")

    name = "store id mapping"
    try:
        userns.run_in_userns(maps, syscalls.CLONE_NEWUSER, child, user=user)
    except RootlessError as e:
        return Check(name, False, True, e.message, e.hint)
    kind = "single-id mapping" if maps.single else "newuidmap/newgidmap"
    return Check(name, True, True, f"{kind}: uids {_map_text(maps.uid_map)}; gids {_map_text(maps.gid_map)}")


def _overlay_check(ctx: Context, results: dict[str, str | None] | str) -> Check:
    name = "overlay in a user namespace"
    _, fs = fs_name(ctx.layout.root)
    if isinstance(results, str):
        return Check(name, False, False, f"not probed on the store's file system ({fs}): {results}")
    why = results.get("overlay", "not tried")
    if why is None:
        return Check(name, True, False, f"kernel overlay works on the store's file system ({fs}): "
                     "whiteouts, opaque directories")
    fallback = "fuse-overlayfs" if "fuse-overlayfs" in results and results["fuse-overlayfs"] is None else "vfs"
    return Check(name, False, False, f"not on the store's file system ({fs}): {why}; runs use {fallback}",
                 "kernel overlay needs Linux >= 5.11 and a store (--root) on ext4, xfs, btrfs or tmpfs")


def _store_check(layout: Layout) -> Check:
    """The store exists and is writable, or can be created: a pull writes it first thing."""
    name = "store"
    root = layout.root
    _, fs = fs_name(root)
    user = idmap.current_user()
    if root.is_dir():
        if os.access(root, os.W_OK | os.X_OK):
            return Check(name, True, True, f"{root} ({fs})")
        return Check(name, False, True, f"{root} ({fs}) is not writable",
                     f"make it writable (as root: chown -R {user}: {root}), or choose another store with --root")
    parent = _existing(root.parent)
    if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
        return Check(name, True, True, f"{root} ({fs}) does not exist yet; the first pull creates it")
    return Check(name, False, True, f"{root} cannot be created: {parent} ({fs}) is not writable",
                 "choose a store in a directory of yours with --root, or set HOME (or XDG_DATA_HOME) to one")


def _config_check() -> Check:
    from rootless import config as cfg
    from rootless.layout import config_file

    path = config_file()
    try:
        c = cfg.load(path, required=bool(os.environ.get("ROOTLESS_CONFIG")))
    except RootlessError as e:
        return Check("config", False, True, e.message, e.hint)
    return Check("config", True, True, str(path) if c.source else f"{path} does not exist: the defaults")


def _tun_check(needed: bool) -> Check:
    """slirp4netns opens /dev/net/tun to make the container's tap device."""
    try:
        os.close(os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC))
    except OSError as e:
        return Check("/dev/net/tun", False, needed,
                     f"open /dev/net/tun: {e.strerror}: containers get no network of their own",
                     "as root: chmod 0666 /dev/net/tun (or modprobe tun when it is missing)")
    return Check("/dev/net/tun", True, needed, "/dev/net/tun opens read-write")


def _fuse_checks() -> list[Check]:
    ok, detail = fuse_usable()
    fuse = Check("/dev/fuse", ok, False, detail,
                 None if ok else "as root: modprobe fuse, and make /dev/fuse mode 0666")
    path = idmap.find_helper("fuse-overlayfs")
    prog = Check("fuse-overlayfs", path is not None, False,
                 path or "not installed (the fallback when native overlay is unavailable)",
                 None if path else "as root: apt-get install fuse-overlayfs")
    return [fuse, prog]


def _slirp_check(needed: bool) -> Check:
    path = idmap.find_helper("slirp4netns")
    return Check("slirp4netns", path is not None, needed,
                 path or "not installed: containers get no network of their own",
                 None if path else "as root: apt-get install slirp4netns")


def _user_network_check(slirp_ok: bool) -> Check:
    """What `run --network NAME` needs: slirp4netns (the shared namespace's way out), iptables
    (its NAT), dnslib (the daemon's name servers), and a bridge made in a user+network namespace."""
    import importlib.util
    import shutil

    name = "user networks"
    fix = "as root: apt-get install slirp4netns iptables; and pip install dnslib"
    missing = [m for m in ("dnslib",) if importlib.util.find_spec(m) is None]
    ipt = shutil.which("iptables") or shutil.which("iptables", path="/usr/sbin:/sbin")
    if not slirp_ok or ipt is None or missing:
        what = [w for w, bad in (("slirp4netns", not slirp_ok), ("iptables", ipt is None)) if bad] + missing
        return Check(name, False, False, "missing: " + ", ".join(what), fix)
    uid, gid = os.geteuid(), os.getegid()
    ip_tool = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin") or "ip"

    def child() -> None:
        import subprocess

        syscalls.unshare(syscalls.CLONE_NEWUSER | syscalls.CLONE_NEWNET)
        _write_own_maps(uid, gid)
        for argv in ([ip_tool, "link", "add", "rlprobe0", "type", "bridge"],
                     [ipt, "-t", "nat", "-A", "POSTROUTING", "-o", "rlprobe0", "-j", "MASQUERADE"]):
            r = subprocess.run(argv, capture_output=True, text=True, check=False)
            if r.returncode != 0:
                raise OSError(f"{' '.join(argv[:3])}: {r.stderr.strip() or r.returncode}")

    err = _fork_check(child)
    return Check(name, err is None, False, err or f"bridges and NAT work in a user namespace ({ipt})",
                 None if err is None else "a kernel with bridge, veth and nf_tables (iptables-nft) support")


def _runtime_dir_check(uid: int, user: str) -> Check:
    name = "XDG_RUNTIME_DIR"
    create = (f"log in through a PAM session with pam_systemd (or `loginctl enable-linger {user}` as root); "
              f"without systemd, as root: mkdir -m 700 /run/user/{uid} && chown {user}: /run/user/{uid}, "
              f"then export XDG_RUNTIME_DIR=/run/user/{uid}")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    fallback = f"/tmp/rootless-run-{uid}"
    if not xdg:
        return Check(name, False, False, f"not set: volatile state goes to {fallback}", create)
    try:
        st = os.stat(xdg)
    except OSError as e:
        return Check(name, False, False, f"{xdg}: {e.strerror}: volatile state goes to {fallback}", create)
    if st.st_uid != uid:
        return Check(name, False, False, f"{xdg} is owned by uid {st.st_uid}, not {uid}", create)
    if st.st_mode & 0o077:
        return Check(name, False, False, f"{xdg} has mode {stat.S_IMODE(st.st_mode):o}, not 700",
                     f"chmod 700 {xdg}")
    return Check(name, True, False, f"{xdg} (owned by {user}, mode 700)")


def _runroot_check(layout: Layout) -> Check:
    """A default run uses the store's recorded run root; this is what it would refuse."""
    name = "run root"
    try:
        used = Layout.for_store(layout.root)
    except RootlessError as e:
        return Check(name, False, True, e.message, e.hint)
    recorded = used.recorded_runroot()
    how = f"recorded in {used.store_meta}" if recorded is not None else "recorded at first use"
    return Check(name, True, True, f"{used.runroot} ({how})")


def _cgroup_check(ctx: Context) -> Check:
    from rootless.runtime import cgroups

    h = cgroups.probe(ctx.config.cgroup_manager)
    name = "cgroup delegation"
    if h.version != "v2":
        return Check(name, False, False, f"{h.reason}: resource limits (--memory, --cpus, --pids-limit) "
                     "are unavailable; containers run without a cgroup of their own",
                     "boot with systemd.unified_cgroup_hierarchy=1 on the kernel command line (cgroup v2), "
                     "then " + _DELEGATE_FIX)
    if h.manager is None:
        return Check(name, False, False, f"cgroup v2, but {h.reason}: resource limits are unavailable",
                     _DELEGATE_FIX)
    ctl = " ".join(h.controllers) or "none"
    where = f"{h.manager}, containers under {h.parent}"
    missing = [c for c in ("cpu", "cpuset", "io", "memory", "pids") if c not in h.controllers]
    if missing:
        return Check(name, False, False, f"cgroup v2 ({where}) with {ctl}; not delegated: {' '.join(missing)}",
                     _DELEGATE_FIX)
    return Check(name, True, False, f"cgroup v2 ({where}) with {ctl}")


def _nfs_check(layout: Layout) -> Check:
    places = [("home", Path(os.path.expanduser("~"))), ("store", layout.root)]
    seen = []
    bad = []
    for label, p in places:
        magic, fs = fs_name(p)
        seen.append(f"{label} {p}: {fs}")
        if magic == syscalls.NFS_SUPER_MAGIC:
            bad.append(label)
    if bad:
        return Check("local file system", False, False,
                     "; ".join(seen) + ": user namespaces and extended attributes misbehave on NFS "
                     "(the server sees unmapped ids; overlay cannot use it as upper dir)",
                     "keep the store on a local disk: --root /var/tmp/$USER/rootless")
    return Check("local file system", True, False, "; ".join(seen))


def checks(ctx: Context) -> list[Check]:
    """Every check; a needed one fails exactly when a default `run` would."""
    uid, gid = os.getuid(), os.getgid()
    user = idmap.current_user()
    config = _config_check()
    store = _store_check(ctx.layout)
    # the default network is slirp4netns unless the config says otherwise
    network_needed = config.ok and ctx.config.network.split(":", 1)[0] == "slirp4netns"
    out = [
        config,
        store,
        _subid_check("uid", idmap.SUBUID, user, uid),
        _subid_check("gid", idmap.SUBGID, user, uid),
        _helper_check("newuidmap"),
        _helper_check("newgidmap"),
        *_sysctl_checks(),
    ]
    ns = _userns_check()
    out.append(ns)
    if ns.ok:
        try:
            out.append(_mapping_check(idmap.store_maps(uid, gid, user), user))
        except RootlessError as e:
            out.append(Check("store id mapping", False, True, e.message, e.hint))
        out.append(_overlay_check(ctx, probe_drivers(ctx) if store.ok else "the store cannot be created"))
    out += _fuse_checks()
    out.append(_slirp_check(network_needed))
    out.append(_tun_check(network_needed))
    out.append(_user_network_check(out[-2].ok and ns.ok))
    out.append(_runtime_dir_check(uid, user))
    out.append(_runroot_check(ctx.layout))
    out.append(_cgroup_check(ctx))
    out.append(_nfs_check(ctx.layout))
    return out


# --- info -------------------------------------------------------------------------------


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                key, _, value = line.strip().partition("=")
                if key == "PRETTY_NAME":
                    return value.strip('"')
    except OSError:
        pass
    return "unknown"


def _version(path: str | None, pick: Callable[[list[str]], str | None]) -> str | None:
    if path is None:
        return None
    import subprocess

    try:
        res = subprocess.run([path, "--version"], stdin=subprocess.DEVNULL, capture_output=True,
                             timeout=3, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (res.stdout + res.stderr).decode(errors="replace").splitlines()
    return pick([ln.strip() for ln in lines if ln.strip()])


def _fuse_overlayfs_line(lines: list[str]) -> str | None:
    # `fuse-overlayfs --version` starts with fusermount3's version, then its own
    return next((ln for ln in lines if ln.startswith("fuse-overlayfs")), lines[0] if lines else None)


def _count(d: Path) -> int:
    try:
        return sum(1 for e in os.scandir(d) if not e.name.startswith("."))
    except OSError:
        return 0


def storage_driver(ctx: Context) -> tuple[str, str]:
    """The driver that will be used and why: the config, the store's record, or the probe's choice."""
    from storage.drivers import probe as driver_probe

    if ctx.config.storage_driver:
        return ctx.config.storage_driver, "config"
    data = driver_probe.read_record(ctx.layout)
    if data is not None and data.get("kernel") == driver_probe.kernel_release():
        return str(data["driver"]), f"recorded in {driver_probe.record_path(ctx.layout)}"
    results = probe_drivers(ctx)
    if isinstance(results, str):
        return "vfs", f"not probed: {results}"
    driver, failures = driver_probe.decide(results)
    if not failures:
        return driver, "native overlay works in a user namespace"
    return driver, "; ".join(f"{d}: {why}" for d, why in failures)


def info(ctx: Context) -> dict[str, Any]:
    uid, gid = os.getuid(), os.getgid()
    user = idmap.current_user()
    uname = os.uname()
    from rootless.runtime import cgroups, seccomp

    cg = cgroups.probe(ctx.config.cgroup_manager)
    try:
        idmaps: dict[str, Any] = idmap.store_maps(uid, gid, user).to_json()
    except RootlessError as e:
        idmaps = {"error": e.message}
    driver, why = storage_driver(ctx)
    _, fs = fs_name(ctx.layout.root)
    helpers: dict[str, Any] = {}
    for name in ("newuidmap", "newgidmap"):
        path = idmap.find_helper(name)
        helpers[name] = {"path": path, "privileged": bool(path and idmap.helper_privileged(path))}
    fuse_ovl, slirp = idmap.find_helper("fuse-overlayfs"), idmap.find_helper("slirp4netns")
    helpers["fuse-overlayfs"] = {"path": fuse_ovl, "version": _version(fuse_ovl, _fuse_overlayfs_line)}
    helpers["slirp4netns"] = {"path": slirp, "version": _version(slirp, lambda ls: ls[0] if ls else None)}
    return {
        "host": {
            "kernel": uname.release,
            "os": _os_name(),
            "arch": uname.machine,
            "hostname": uname.nodename,
            "cgroup": {"version": cg.version, "path": cg.path, "manager": cg.manager,
                       "parent": cg.parent, "controllers": list(cg.controllers),
                       **({"unavailable": cg.reason} if cg.manager is None else {})},
            "user": user,
            "uid": uid,
            "gid": gid,
            "security": {"rootless": True, **seccomp.status()},
        },
        "store": {
            "root": str(ctx.layout.root),
            "runroot": str(ctx.layout.runroot),
            "runroot_fallback": ctx.layout.runroot_fallback,
            "filesystem": fs,
            "driver": driver,
            "driver_reason": why,
            "images": _count(ctx.layout.images),
            "layers": _count(ctx.layout.layers),
        },
        "idmaps": idmaps,
        "helpers": helpers,
    }
