"""Assemble the container's file system: the rootfs, then the Spec's mount list in order,
masked and read-only paths, then pivot_root (the order runc and crun follow).

Runs only in the container's child, as root of its user namespace and inside its own mount
namespace, so nothing here is visible on the host. Every destination is resolved inside
the rootfs (symlinks in the image cannot point a mount at the host's files).
"""

from __future__ import annotations

import errno
import os
import signal
import stat
from collections.abc import Sequence

from rootless.errors import NamespaceError
from rootless.runtime import syscalls as sc
from rootless.spec import CHOWN_OPTION, COPY_UP_MARKER, COPY_UP_OPTION, Mount, RootfsPlan

# mount(8) option names → (flags to set, flags to clear)
_FLAGS: dict[str, tuple[int, int]] = {
    "ro": (sc.MS_RDONLY, 0), "rw": (0, sc.MS_RDONLY),
    "nosuid": (sc.MS_NOSUID, 0), "suid": (0, sc.MS_NOSUID),
    "nodev": (sc.MS_NODEV, 0), "dev": (0, sc.MS_NODEV),
    "noexec": (sc.MS_NOEXEC, 0), "exec": (0, sc.MS_NOEXEC),
    "noatime": (sc.MS_NOATIME, 0), "atime": (0, sc.MS_NOATIME),
    "nodiratime": (sc.MS_NODIRATIME, 0), "diratime": (0, sc.MS_NODIRATIME),
    "relatime": (sc.MS_RELATIME, 0), "norelatime": (0, sc.MS_RELATIME),
    "strictatime": (sc.MS_STRICTATIME, 0), "nostrictatime": (0, sc.MS_STRICTATIME),
    "bind": (sc.MS_BIND, 0), "rbind": (sc.MS_BIND | sc.MS_REC, 0),
}
_PROPAGATION = {
    "private": sc.MS_PRIVATE, "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED, "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE, "rslave": sc.MS_SLAVE | sc.MS_REC,
}
# statvfs f_flag bits (ST_*) → the mount flag a bind remount must repeat: flags the parent
# namespace set are locked in a user namespace and clearing one is EPERM (mount(2)).
_LOCKED = ((os.ST_NOSUID, sc.MS_NOSUID), (os.ST_NODEV, sc.MS_NODEV), (os.ST_NOEXEC, sc.MS_NOEXEC),
           (os.ST_NOATIME, sc.MS_NOATIME), (os.ST_NODIRATIME, sc.MS_NODIRATIME),
           (os.ST_RELATIME, sc.MS_RELATIME), (os.ST_RDONLY, sc.MS_RDONLY))
_ATTRS = ((sc.MS_RDONLY, sc.MOUNT_ATTR_RDONLY), (sc.MS_NOSUID, sc.MOUNT_ATTR_NOSUID),
          (sc.MS_NODEV, sc.MOUNT_ATTR_NODEV), (sc.MS_NOEXEC, sc.MOUNT_ATTR_NOEXEC))
# The OCI runtime-spec's default /dev links, without Docker's old /dev/core -> /proc/kcore,
# which runc and crun no longer make (and /proc/kcore is masked anyway).
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
             ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"))
_MAX_SYMLINKS = 40  # path_resolution(7)


def parse_options(options: Sequence[str]) -> tuple[int, int, str]:
    """(mount flags, propagation flags, data string) from OCI-style option names."""
    flags = prop = 0
    data = []
    for o in options:
        if o in _FLAGS:
            on, off = _FLAGS[o]
            flags = (flags | on) & ~off
        elif o in _PROPAGATION:
            prop |= _PROPAGATION[o]
        else:
            data.append(o)
    return flags, prop, ",".join(data)


def secure_join(root: str, path: str) -> str:
    """*path* resolved as if *root* were "/": symlinks and ".." never leave *root*.

    Components that do not exist yet are kept literally (the caller creates them).
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    parts.reverse()
    done: list[str] = []
    links = 0
    while parts:
        p = parts.pop()
        if p == "..":
            if done:
                done.pop()
            continue
        full = os.path.join(root, *done, p)
        try:
            st = os.lstat(full)
        except OSError:
            done.append(p)
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > _MAX_SYMLINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), os.path.join("/", *done, p))
            target = os.readlink(full)
            if target.startswith("/"):
                done = []
            parts.extend(reversed([t for t in target.split("/") if t not in ("", ".")]))
            continue
        done.append(p)
    return os.path.join(root, *done)


def _make_mountpoint(dest: str, as_file: bool) -> None:
    try:
        st = os.stat(dest)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if as_file:
            os.close(os.open(dest, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
        else:
            os.mkdir(dest, 0o755)
        return
    if as_file and stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.EISDIR, "is a directory, the mount source is not", dest)


def _locked_flags(path: str) -> int:
    try:
        f = os.statvfs(path).f_flag
    except OSError:
        return 0
    return sum(ms for st, ms in _LOCKED if f & st)


def _bind_flags(dest: str, flags: int, recursive: bool) -> None:
    """Apply ro/nosuid/nodev/noexec to a bind mount (the kernel ignores them on the bind itself)."""
    wanted = flags & (sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    if not wanted:
        return
    attrs = sum(attr for ms, attr in _ATTRS if wanted & ms)
    try:
        sc.mount_setattr(dest, attrs, recursive=recursive)
        return
    except OSError as e:
        if e.errno not in (errno.ENOSYS, errno.EINVAL):
            raise
    sc.mount(None, dest, None, sc.MS_REMOUNT | sc.MS_BIND | wanted | _locked_flags(dest))


def bind(source: str, dest: str, options: Sequence[str] = ("bind",)) -> None:
    flags, prop, _ = parse_options(options)
    sc.mount(source, dest, None, sc.MS_BIND | (flags & sc.MS_REC))
    _bind_flags(dest, flags, recursive=bool(flags & sc.MS_REC))
    if prop:
        sc.mount(None, dest, None, prop)


def mount_one(root: str, m: Mount) -> None:
    """Perform one Spec mount under *root*."""
    dest = secure_join(root, m.destination)
    options = tuple(o for o in m.options if o != CHOWN_OPTION)  # process.give_mounts does it
    if COPY_UP_OPTION in options:
        options = tuple(o for o in options if o != COPY_UP_OPTION)
        copy_up_once(dest, m.source)
    flags, prop, data = parse_options(options)
    if m.type == "bind" or flags & sc.MS_BIND:
        _make_mountpoint(dest, as_file=not os.path.isdir(m.source))
        bind(m.source, dest, options)
        return
    _make_mountpoint(dest, as_file=False)
    try:
        sc.mount(m.source or m.type, dest, m.type, flags, data or None)
    except OSError as e:
        if m.type == "devpts" and e.errno == errno.EINVAL and "gid=" in data:
            # gid 5 (tty) is unmapped under a single-id mapping
            data = ",".join(d for d in data.split(",") if not d.startswith("gid="))
            sc.mount(m.source or m.type, dest, m.type, flags, data or None)
        elif m.type in ("sysfs", "cgroup2") and e.errno in (errno.EPERM, errno.EACCES):
            # sysfs needs a network namespace of our own; bind the host's instead, read-only
            host = "/sys" if m.type == "sysfs" else "/sys/fs/cgroup"
            bind(host, dest, ("rbind", "nosuid", "nodev", "noexec", "ro"))
        else:
            raise
    if prop:
        sc.mount(None, dest, None, prop)
    if m.destination == "/dev" and m.type == "tmpfs":
        for name, target in DEV_LINKS:
            os.symlink(target, os.path.join(dest, name))


def chown_tree(top: str, uid: int, gid: int) -> None:
    """lchown(2) *top* and everything under it (never through a symlink) to *uid*:*gid*, as
    Podman's :U does; special files too."""
    os.lchown(top, uid, gid)
    if not os.path.isdir(top) or os.path.islink(top):
        return
    for dirpath, dirnames, filenames in os.walk(top, onerror=_raise):
        for name in (*dirnames, *filenames):
            os.lchown(os.path.join(dirpath, name), uid, gid)


def _raise(e: OSError) -> None:
    raise e


def copy_up_once(src: str, volume: str) -> None:
    """Docker's volume copy-up: a new volume mounted over a directory of the image starts with
    that directory's content. Done as the container's root (the store's mapping), so owners
    and modes are the image's; only into an empty volume, and only the first time (the marker
    beside the volume's data records it)."""
    marker = os.path.join(os.path.dirname(volume), COPY_UP_MARKER)
    if os.path.exists(marker):
        return
    try:
        if os.path.isdir(src) and not os.path.islink(src) and not os.listdir(volume):
            st = os.lstat(src)
            _copy_tree(src, volume)
            os.chown(volume, st.st_uid, st.st_gid)
            os.chmod(volume, stat.S_IMODE(st.st_mode))
            os.utime(volume, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.close(os.open(marker, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
    except OSError as e:
        raise NamespaceError(f"copy the image's {src} into volume {os.path.dirname(volume)}: "
                             f"{e.filename or ''}: {e.strerror}") from e


def _copy_tree(src: str, dst: str, links: dict[tuple[int, int], str] | None = None) -> None:
    """The entries under *src* recreated in *dst*: directories, files (hard links kept), symlinks
    and fifos with owner, mode and times; device nodes and sockets cannot be made here."""
    links = {} if links is None else links
    with os.scandir(src) as it:
        entries = list(it)
    for e in entries:
        s, d = e.path, os.path.join(dst, e.name)
        st = e.stat(follow_symlinks=False)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            os.mkdir(d, 0o700)
            _copy_tree(s, d, links)
        elif stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in links:
                os.link(links[key], d)
                continue
            _copy_file(s, d, st.st_size)
            if st.st_nlink > 1:
                links[key] = d
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(s), d)
            os.lchown(d, st.st_uid, st.st_gid)
            os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
            continue
        elif stat.S_ISFIFO(mode):
            os.mkfifo(d, 0o600)
        else:
            continue
        os.lchown(d, st.st_uid, st.st_gid)
        os.chmod(d, stat.S_IMODE(mode))  # after chown(2), which clears set-user-ID bits
        os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns))


def _copy_file(src: str, dst: str, size: int) -> None:
    fi = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fo = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            left = size
            while left > 0:
                n = os.sendfile(fo, fi, None, min(left, 1 << 30))
                if n == 0:
                    break
                left -= n
        finally:
            os.close(fo)
    finally:
        os.close(fi)


def mask(root: str, path: str) -> None:
    """Hide *path*: /dev/null over a file, an empty read-only tmpfs over a directory."""
    dest = secure_join(root, path)
    try:
        st = os.stat(dest)
    except OSError:
        return
    if stat.S_ISDIR(st.st_mode):
        sc.mount("tmpfs", dest, "tmpfs", sc.MS_RDONLY)
    else:
        sc.mount(os.path.join(root, "dev/null"), dest, None, sc.MS_BIND)


def readonly(root: str, path: str) -> None:
    dest = secure_join(root, path)
    if not os.path.exists(dest):
        return
    sc.mount(dest, dest, None, sc.MS_BIND | sc.MS_REC)
    _bind_flags(dest, sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, recursive=True)


# --------------------------------------------------------------------------- the rootfs


def _overlay_data(plan: RootfsPlan) -> tuple[str, str | None]:
    """The overlayfs option string, and a directory to chdir to when the absolute paths do
    not fit the one page the kernel reads options from (relative paths resolve from cwd)."""
    def opts(lower: Sequence[str], upper: str | None, work: str | None) -> str:
        s = "lowerdir=" + ":".join(lower)
        if upper and work:
            s += f",upperdir={upper},workdir={work}"
        return s

    text = opts(plan.lower, plan.upper, plan.work)
    if len(text) < 4000:
        return text, None
    paths = [*plan.lower, *(p for p in (plan.upper, plan.work) if p)]
    base = os.path.commonpath(paths)
    def rel(p: str) -> str:
        return os.path.relpath(p, base)

    return opts([rel(p) for p in plan.lower], plan.upper and rel(plan.upper),
                plan.work and rel(plan.work)), base


def find_program(name: str) -> str | None:
    for d in (os.environ.get("PATH") or os.defpath).split(os.pathsep) + ["/usr/bin", "/usr/local/bin"]:
        p = os.path.join(d or ".", name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def mount_rootfs(plan: RootfsPlan) -> None:
    """Mount the planned rootfs at ``plan.target`` in the current (private) mount namespace."""
    target = plan.target
    os.makedirs(target, exist_ok=True)
    if plan.driver == "vfs":
        sc.mount(target, target, None, sc.MS_BIND | sc.MS_REC)
        return
    if not plan.lower:
        raise NamespaceError(f"rootfs plan for {target}: {plan.driver} needs at least one lower layer")
    if plan.driver == "overlay":
        data, chdir = _overlay_data(plan)
        if chdir is not None:
            here = os.getcwd()
            os.chdir(chdir)
        try:
            sc.mount("overlay", target, "overlay", 0, data + ",userxattr")
        finally:
            if chdir is not None:
                os.chdir(here)
        return
    if plan.driver == "fuse-overlayfs":
        _fuse_overlayfs(plan)
        return
    raise NamespaceError(f"rootfs plan for {target}: unknown driver {plan.driver!r}")


def _fuse_overlayfs(plan: RootfsPlan) -> None:
    import subprocess

    prog = find_program("fuse-overlayfs")
    if prog is None:
        raise NamespaceError("fuse-overlayfs not found", "install it (apt-get install fuse-overlayfs) "
                             "or choose another driver with --storage-driver")
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC))
    except OSError as e:
        # The store recorded fuse-overlayfs when /dev/fuse worked; fuse-overlayfs's own text
        # ("fuse: device not found") would not say what changed or what to do.
        raise NamespaceError(f"fuse-overlayfs on {plan.target}: /dev/fuse: {e.strerror}: this store uses the "
                             "fuse-overlayfs driver, which needs it",
                             "as root: `modprobe fuse` and `chmod 0666 /dev/fuse`; or run `rootless system "
                             "migrate` so that new containers use a driver that works here") from None
    opts = "lowerdir=" + ":".join(plan.lower)
    if plan.upper and plan.work:
        opts += f",upperdir={plan.upper},workdir={plan.work}"
    for key, shift in (("uidmapping", plan.uid_shift), ("gidmapping", plan.gid_shift)):
        if shift:  # fuse-overlayfs(1): ID:MAPPED-ID:LEN triples, colon-separated
            opts += f",{key}=" + ":".join(f"{m.container_id}:{m.host_id}:{m.size}" for m in shift)
    # As root of the namespace fuse-overlayfs mounts through mount(2) itself; allow_other
    # lets container processes running as other users through the FUSE permission check.
    # The daemon outlives us: it must not inherit the signals our caller blocked, or the
    # SIGTERM that ends it after the container would wait forever.
    old = signal.pthread_sigmask(signal.SIG_SETMASK, ())
    try:
        res = subprocess.run([prog, "-o", opts + ",allow_other", plan.target], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    if res.returncode != 0:
        err = " ".join(res.stderr.decode(errors="replace").split()) or f"exit status {res.returncode}"
        raise NamespaceError(f"fuse-overlayfs on {plan.target}: {err}")


# --------------------------------------------------------------------------- the whole tree


def setup(root: str, mounts: Sequence[Mount], masked: Sequence[str], ro_paths: Sequence[str],
          readonly_root: bool) -> None:
    """Everything between the mounted rootfs and pivot_root."""
    for m in mounts:
        mount_one(root, m)
    for p in ro_paths:
        readonly(root, p)
    for p in masked:
        mask(root, p)
    if readonly_root:
        _bind_flags(root, sc.MS_RDONLY, recursive=False)


def pivot(root: str) -> None:
    """Make *root* the root: pivot_root(".", ".") stacks the old root on the new one, and a
    lazy unmount drops it (the runc idiom: no put_old directory needed in the image)."""
    os.chdir(root)
    sc.pivot_root(".", ".")
    sc.umount2(".", sc.MNT_DETACH)
    os.chdir("/")
