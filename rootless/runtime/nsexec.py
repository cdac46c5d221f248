"""`exec` and `cp`: a process of ours inside a running container's namespaces and root.

setns(2) order matters: the user namespace first (it grants the capabilities the others
need: CAP_SYS_ADMIN over the mount namespace, CAP_SYS_CHROOT), then mnt, uts, ipc, net,
cgroup and pid. Joining a mount namespace leaves the caller's root and cwd where the
namespace's root is, not where the container pivoted to, so the container's root is taken
from /proc/PID/root (opened before the setns) with fchdir + chroot. A PID namespace applies
to children only: the command is forked once more after the setns, and reported to us (a
child subreaper) before its parent exits, as process.start does.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
from typing import TYPE_CHECKING, NoReturn

from rootless.errors import RootlessError
from rootless.runtime import childerr, process, syscalls

if TYPE_CHECKING:
    from collections.abc import Callable

    from rootless.context import Log
    from rootless.runtime.seccomp import Filter
    from rootless.spec import Process, Spec

# /proc/PID/ns names in join order, with their CLONE_* types (setns(2))
_ORDER = (("user", syscalls.CLONE_NEWUSER), ("mnt", syscalls.CLONE_NEWNS), ("uts", syscalls.CLONE_NEWUTS),
          ("ipc", syscalls.CLONE_NEWIPC), ("net", syscalls.CLONE_NEWNET), ("cgroup", syscalls.CLONE_NEWCGROUP),
          ("pid", syscalls.CLONE_NEWPID))


@dataclasses.dataclass(frozen=True)
class Target:
    pid: int
    root: int  # O_PATH-like fd of /proc/PID/root
    namespaces: tuple[tuple[int, int], ...]  # (fd, CLONE_* type), in join order


def open_target(pid: int, name: str) -> Target:
    """The namespaces of *pid* that differ from ours, opened now (the PID may be reused later)."""
    fds = []
    try:
        root = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        for ns, kind in _ORDER:
            mine, theirs = os.stat(f"/proc/self/ns/{ns}"), os.stat(f"/proc/{pid}/ns/{ns}")
            if (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino):
                continue  # setns into our own user namespace is EINVAL; the rest needs nothing
            fds.append((os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC), kind))
    except OSError as e:
        for fd, _ in fds:
            os.close(fd)
        raise RootlessError(f"open the namespaces of container {name} (process {pid}): {e.strerror}",
                            hint="is it still running? `rootless ps -a`") from e
    return Target(pid, root, tuple(fds))


def close_target(t: Target) -> None:
    for fd in (t.root, *(fd for fd, _ in t.namespaces)):
        os.close(fd)


def _enter(t: Target) -> None:
    """In a forked child: join the namespaces (user first) and the container's root."""
    for fd, kind in t.namespaces:
        syscalls.setns(fd, kind, what=f"join the container's {syscalls.ns_names(kind)} namespace")
    os.fchdir(t.root)
    os.chroot(".")
    os.chdir("/")
    # The container's root user: the user namespace maps our uid to 0 (or another id).
    try:
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    except OSError:
        pass


def _report_fail(fd: int, kind: str, err: BaseException) -> NoReturn:
    process.fail(fd, kind, err)


def exec_in(spec: Spec, pid: int, proc: Process, log: Log, cgroup: tuple[str, str, str] | None = None) -> int:
    """Run *proc* in the running container (*spec*, PID 1 *pid*); its exit status. *cgroup*:
    the container's (path, manager, unit), which the process joins first."""
    from rootless.runtime import tty

    # the container's own filter (built for its capabilities), as Podman's exec inherits it
    filt = process.seccomp_filter(spec, log)
    t = open_target(pid, spec.name)
    p = dataclasses.replace(spec, process=proc, rundir="")
    cap_last = process.cap_last_cap()
    src = tty.terminal_size_source() if proc.terminal else None
    winsize = tty.get_winsize(src) if src is not None else None
    syscalls.set_child_subreaper()
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    sock_parent, sock_child = process.fd_channel(proc.terminal)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    with process.blocked((*process.FORWARDED, signal.SIGCHLD)):
        child = os.fork()
        if child == 0:
            os.close(report_r)
            if sock_parent >= 0:
                os.close(sock_parent)
            _exec_child(p, t, report_w, sock_child, winsize, cap_last, cgroup, log, filt)
        os.close(report_w)
        close_target(t)
        if sock_child >= 0:
            os.close(sock_child)
        lines = process.Lines(report_r)
        try:
            first = lines.line()
            os.waitpid(child, 0)
            if not first.startswith(b"P"):
                raise process.child_error(proc.args[0], first) if first.startswith(b"E") else \
                    RootlessError(f"exec in container {spec.name}: the joining process failed")
            gpid = int(first[1:])
            master = None
            if sock_parent >= 0:
                sock, sock_parent = sock_parent, -1
                master = process.receive_fd(sock)
            rest = lines.line()
            if rest.startswith(b"E"):
                try:
                    os.waitpid(gpid, 0)
                except ChildProcessError:
                    pass
                if master is not None:
                    os.close(master)
                raise process.child_error(proc.args[0], rest)
        finally:
            os.close(report_r)
            if sock_parent >= 0:
                os.close(sock_parent)
        started = process.Started(gpid, master)
        if master is not None:
            if proc.interactive and os.isatty(0):
                with tty.raw_mode(0):
                    return tty.relay(started, interactive=True)
            return tty.relay(started, interactive=proc.interactive)
        return process.wait(started)


def _exec_child(spec: Spec, t: Target, report: int, sock: int, winsize: bytes | None, cap_last: int,
                cgroup: tuple[str, str, str] | None, log: Log, filt: Filter | None) -> NoReturn:
    stage = "setup"
    try:
        if cgroup is not None and cgroup[0]:
            stage = "cgroup"
            from rootless.runtime import cgroups

            cgroups.join(*cgroup, os.getpid(), log)
            stage = "setup"
        _enter(t)
        stage = "user"
        who = process.resolve_user(spec, "/")
        slave = -1
        if spec.process.terminal:
            stage = "terminal"
            import socket

            master, slave, _ = process.open_pty("/")
            with socket.socket(fileno=sock) as s:
                socket.send_fds(s, [b"M"], [master])
            os.close(master)
        stage = "setup"
        gpid = os.fork()
        if gpid == 0:
            os.setsid()
            process.exec_process(spec.process, who, report, slave, winsize, cap_last,
                                 single_gid_map=len(spec.gid_map) <= 1, seccomp=filt)
        os.write(report, b"P%d\n" % gpid)
    except BaseException as e:
        _report_fail(report, stage, e)
    os._exit(0)


# --------------------------------------------------------------------------- cp


def _in_container(t: Target, func: Callable[[], None]) -> int:
    """Fork, enter the container, run *func*; the child's pid (errors go to stderr as one line)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            _enter(t)
            func()
        except BaseException as e:  # reported by the parent from the error pipe
            childerr.report(2, "copy", e)
            code = 1
        os._exit(code)
    return pid


def _dest_mapping(dest: str) -> tuple[str, str | None]:
    """(directory to extract into, new name for the top entry or None) as cp(1) decides."""
    if os.path.isdir(dest):
        return dest, None
    parent = os.path.dirname(dest.rstrip("/")) or "/"
    if not os.path.isdir(parent):
        raise FileNotFoundError(2, "no such directory", parent)
    return parent, os.path.basename(dest.rstrip("/"))


def _safe_members(tf: object, base: str, rename: str | None, root_owned: bool = False) -> int:
    """Members renamed to their destination; a name leaving *base* (absolute, "..", or through
    a symbolic link extracted earlier) stops the copy (Python 3.11 tarfile has no filters).
    *root_owned*: every member becomes the container root's."""
    import tarfile

    assert isinstance(tf, tarfile.TarFile)
    n = 0
    real_base = os.path.realpath(base)
    for m in tf:
        parts = [p for p in m.name.split("/") if p not in ("", ".")]
        if not parts or any(p == ".." for p in parts) or m.name.startswith("/"):
            raise RootlessError(f"copy: refusing archive member {m.name!r}: it leaves the destination")
        if rename is not None:
            parts[0] = rename
        m.name = "/".join(parts)
        if m.islnk():
            lparts = [p for p in m.linkname.split("/") if p not in ("", ".")]
            if any(p == ".." for p in lparts):
                raise RootlessError(f"copy: refusing hard link {m.name!r} -> {m.linkname!r}")
            if rename is not None and lparts:
                lparts[0] = rename
            m.linkname = "/".join(lparts)
        parent = os.path.realpath(os.path.join(base, os.path.dirname(m.name)))
        if parent != real_base and not parent.startswith(real_base + os.sep):
            raise RootlessError(f"copy: refusing archive member {m.name!r}: it leaves the destination")
        if root_owned:
            m.uid = m.gid = 0
        tf.extract(m, base, set_attrs=True, numeric_owner=True)
        n += 1
    return n


def _tar_from(pid: int, name: str, src: str) -> tuple[int, int, int]:
    """A child in the container of *pid* writing *src* there as a tar archive to a pipe:
    (the child, the pipe's read end, its error pipe's read end for _finish)."""
    import tarfile

    t = open_target(pid, name)
    r, w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)

    def archive() -> None:
        os.dup2(err_w, 2)
        if not os.path.lexists(src):
            raise FileNotFoundError(2, "no such file or directory", src)
        with os.fdopen(w, "wb") as f, tarfile.open(fileobj=f, mode="w|") as tf:
            tf.add(src, arcname=os.path.basename(os.path.normpath(src)) or "root")

    child = _in_container(t, archive)
    os.close(w)
    os.close(err_w)
    close_target(t)
    return child, r, err_r


def _untar_into(pid: int, name: str, where: Callable[[], tuple[str, str | None]]) -> tuple[int, int, int]:
    """A child in the container of *pid* extracting the tar archive written to a pipe where
    *where* says (called in the container: the directory, a new name for the top entry or None),
    through _safe_members: (the child, the pipe's write end, its error pipe's read end)."""
    import tarfile

    t = open_target(pid, name)
    r, w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)

    def extract() -> None:
        os.dup2(err_w, 2)
        base, rename = where()
        with os.fdopen(r, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tf:
            _safe_members(tf, base, rename)

    child = _in_container(t, extract)
    os.close(r)
    os.close(err_w)
    close_target(t)
    return child, w, err_r


def copy_in(spec: Spec, pid: int, src: str, dest: str, owner: tuple[int, int] = (0, 0)) -> None:
    """Host *src* → container *dest*, modes kept; files become *owner*'s (uid, gid as the
    container sees them: its user's, as Podman gives them)."""
    import tarfile

    if not os.path.lexists(src):
        raise RootlessError(f"copy {src}: no such file or directory")
    child, w, err_r = _untar_into(pid, spec.name, lambda: _dest_mapping(dest))

    def owned(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        ti.uid, ti.gid = owner
        ti.uname = ti.gname = ""
        return ti

    try:
        with os.fdopen(w, "wb") as f, tarfile.open(fileobj=f, mode="w|") as tf:
            tf.add(src, arcname=os.path.basename(os.path.normpath(src)), filter=owned)
    except BrokenPipeError:
        pass
    _finish(child, err_r, f"copy {src} to {spec.name}:{dest}")


def copy_out(spec: Spec, pid: int, src: str, dest: str) -> None:
    """Container *src* → host *dest*, modes kept; files become the user's."""
    import tarfile

    base, rename = _dest_mapping(dest)
    child, r, err_r = _tar_from(pid, spec.name, src)
    failure: BaseException | None = None
    try:
        with os.fdopen(r, "rb") as f:
            try:
                with tarfile.open(fileobj=f, mode="r|") as tf:
                    _safe_members(tf, base, rename)
            except tarfile.ReadError as e:
                failure = e
    finally:
        _finish(child, err_r, f"copy {spec.name}:{src} to {dest}")
    if failure is not None:
        raise RootlessError(f"copy {spec.name}:{src} to {dest}: {failure}")


def copy_in_stream(spec: Spec, pid: int, stream: int, dest: str) -> None:
    """`cp - CTR:DIR`: the tar archive read from *stream* extracted into the directory *dest*
    inside the running container (the same checks as copy_in: nothing lands outside *dest*)."""

    def directory() -> tuple[str, str | None]:
        if not os.path.isdir(dest):
            raise NotADirectoryError(20, "not a directory", dest)
        return dest, None

    child, w, err_r = _untar_into(pid, spec.name, directory)
    try:
        while chunk := os.read(stream, 1 << 16):
            os.write(w, chunk)
    except BrokenPipeError:
        pass
    finally:
        os.close(w)
    _finish(child, err_r, f"copy the archive on standard input to {spec.name}:{dest}")


def copy_out_stream(spec: Spec, pid: int, src: str, stream: int) -> None:
    """`cp CTR:SRC -`: *src* in the running container as a tar archive written to *stream*."""
    child, r, err_r = _tar_from(pid, spec.name, src)
    try:
        while chunk := os.read(r, 1 << 16):
            os.write(stream, chunk)
    finally:
        os.close(r)
        _finish(child, err_r, f"copy {spec.name}:{src} to standard output")


def _finish(child: int, err_r: int, what: str) -> None:
    _, status = os.waitpid(child, 0)
    data = b""
    while chunk := os.read(err_r, 65536):
        data += chunk
    os.close(err_r)
    if os.waitstatus_to_exitcode(status) != 0:
        f = childerr.decode(data)
        msg = f.message if f is not None else data.decode(errors="replace").strip() or "failed"
        raise RootlessError(f"{what}: {msg}")


# --------------------------------------------------------------------------- cp, stopped container


def _in_rootfs(spec: Spec, func: Callable[[], None], what: str) -> None:
    """Mount the container's rootfs as a container's child would (the store's mapping, a
    user and mount namespace of its own), run *func* chroot'ed in it, unmount."""
    from rootless.runtime import idmap, mounts, namespaces, userns

    err_r, err_w = os.pipe2(os.O_CLOEXEC)

    # the store's own mapping shows the files as stored: no keep-id shift (spec.RootfsPlan)
    plan = dataclasses.replace(spec.rootfs, uid_shift=(), gid_shift=())

    def child() -> None:
        namespaces.private_root()
        mounts.mount_rootfs(plan)
        try:
            # chroot(2) in a child of ours: we stay outside to unmount, which ends a
            # fuse-overlayfs daemon that would otherwise keep the namespace alive
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    os.chroot(spec.rootfs.target)
                    os.chdir("/")
                    func()
                except BaseException as e:  # reported through the error pipe
                    childerr.report(err_w, "copy", e)
                    code = 1
                os._exit(code)
            os.waitpid(pid, 0)
        finally:
            if spec.rootfs.driver != "vfs":
                syscalls.umount2(spec.rootfs.target, syscalls.MNT_DETACH)

    pid, failure = userns.fork_mapped(idmap.current_store_maps(), syscalls.CLONE_NEWUSER | syscalls.CLONE_NEWNS,
                                      child)
    userns.wait_status(pid)
    os.close(err_w)
    data = b""
    while chunk := os.read(err_r, 65536):
        data += chunk
    os.close(err_r)
    if failure is not None:
        raise RootlessError(f"{what}: {failure.message}")
    if data:
        f = childerr.decode(data)
        raise RootlessError(f"{what}: {f.message if f is not None else data.decode(errors='replace').strip()}")


def copy_in_stopped(spec: Spec, src: str, dest: str) -> None:
    """Host *src* → *dest* in a container that is not running (through an in-memory archive)."""
    import tarfile

    if not os.path.lexists(src):
        raise RootlessError(f"copy {src}: no such file or directory")
    buf = os.memfd_create("rootless-cp")

    def owned_by_root(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        return ti

    try:
        with os.fdopen(os.dup(buf), "wb") as f, tarfile.open(fileobj=f, mode="w") as tf:
            tf.add(src, arcname=os.path.basename(os.path.normpath(src)), filter=owned_by_root)

        def extract() -> None:
            base, rename = _dest_mapping(dest)
            os.lseek(buf, 0, os.SEEK_SET)
            with os.fdopen(os.dup(buf), "rb") as f, tarfile.open(fileobj=f, mode="r") as tf:
                _safe_members(tf, base, rename)

        _in_rootfs(spec, extract, f"copy {src} to {spec.name}:{dest}")
    finally:
        os.close(buf)


def copy_out_stopped(spec: Spec, src: str, dest: str) -> None:
    """*src* in a container that is not running → host *dest*."""
    import tarfile

    base, rename = _dest_mapping(dest)
    buf = archive_out(spec, None, src, top="root", what=f"copy {spec.name}:{src} to {dest}")
    try:
        with os.fdopen(os.dup(buf), "rb") as f, tarfile.open(fileobj=f, mode="r") as tf:
            _safe_members(tf, base, rename)
    finally:
        os.close(buf)


# --------------------------------------------------------------------------- archives (the REST API's cp)


def _inside(spec: Spec, pid: int | None, func: Callable[[], None], what: str) -> None:
    """*func* chroot'ed in the container: entered when it runs (*pid*), else in its mounted rootfs."""
    if pid is None:
        _in_rootfs(spec, func, what)
        return
    t = open_target(pid, spec.name)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)

    def run() -> None:
        os.dup2(err_w, 2)
        func()

    child = _in_container(t, run)
    os.close(err_w)
    close_target(t)
    _finish(child, err_r, what)


def path_stat(spec: Spec, pid: int | None, path: str) -> dict[str, object]:
    """lstat(2) of *path* in the container: name, size, mode (Go's os.FileMode bits, as the
    Docker API's X-Docker-Container-Path-Stat carries them), mtime, link target."""
    import json
    import stat as st

    out = os.memfd_create("rootless-stat")
    try:
        def probe() -> None:
            s = os.lstat(path)
            link = os.readlink(path) if st.S_ISLNK(s.st_mode) else ""
            os.write(out, json.dumps({"size": s.st_size, "mode": s.st_mode, "mtime": s.st_mtime,
                                      "link": link}).encode())

        _inside(spec, pid, probe, f"stat {spec.name}:{path}")
        os.lseek(out, 0, os.SEEK_SET)
        data = json.loads(os.read(out, 65536))
    finally:
        os.close(out)
    mode = data["mode"]
    gomode = mode & 0o777
    for test, bit in ((st.S_ISDIR, 1 << 31), (st.S_ISLNK, 1 << 27), (st.S_ISFIFO, 1 << 25),
                      (st.S_ISSOCK, 1 << 24), (st.S_ISCHR, (1 << 26) | (1 << 21)), (st.S_ISBLK, 1 << 26)):
        if test(mode):
            gomode |= bit
    for flag, bit in ((st.S_ISUID, 1 << 23), (st.S_ISGID, 1 << 22), (st.S_ISVTX, 1 << 20)):
        if mode & flag:
            gomode |= bit
    return {"name": os.path.basename(os.path.normpath(path)) or "/", "size": data["size"], "mode": gomode,
            "mtime": data["mtime"], "linkTarget": data["link"], "is_dir": st.S_ISDIR(mode)}


def archive_out(spec: Spec, pid: int | None, src: str, top: str = ".", what: str = "") -> int:
    """A tar of *src* in the container (its last component as the top entry; *top* for "/"),
    in a memfd positioned at 0 for the caller to read and close."""
    import tarfile

    out = os.memfd_create("rootless-archive")
    try:
        def archive() -> None:
            if not os.path.lexists(src):
                raise FileNotFoundError(2, "no such file or directory", src)
            with os.fdopen(os.dup(out), "wb") as f, tarfile.open(fileobj=f, mode="w") as tf:
                tf.add(src, arcname=os.path.basename(os.path.normpath(src)) or top)

        _inside(spec, pid, archive, what or f"copy {spec.name}:{src}")
        os.lseek(out, 0, os.SEEK_SET)
    except BaseException:
        os.close(out)
        raise
    return out


def archive_in(spec: Spec, pid: int | None, dest: str, archive: int, root_owned: bool) -> None:
    """Extract the tar in the fd *archive* (a memfd at 0) into the directory *dest* in the
    container; no member may leave it."""
    import tarfile

    def extract() -> None:
        if not os.path.isdir(dest):
            raise NotADirectoryError(20, "not a directory", dest)
        with os.fdopen(os.dup(archive), "rb") as f, tarfile.open(fileobj=f, mode="r|") as tf:
            _safe_members(tf, dest, None, root_owned)

    _inside(spec, pid, extract, f"copy into {spec.name}:{dest}")
