"""`rootless system service`: the listening socket, one process per connection, idle exit.

The accept loop is single-threaded and forks a child per accepted connection. Every engine
call (create, start, exec, pull) forks and enters namespaces itself; a forked child of a
single-threaded parent is as safe a place for that as the CLI is, which a thread of a
threaded server is not (fork(2) in a multi-threaded process copies only the calling thread,
and a lock another thread held stays locked forever in the child). It also isolates
requests: a handler that blocks (a followed log, an attach stream, a wait) or crashes holds
only its own process, and cwd, umask and signal dispositions an engine call changes never
leak into the next request. The modules the handlers need are imported once in the parent
after the socket listens, so a child starts warm (copy-on-write) in about a millisecond.

Idle: the service exits once no connection has been open for ``idle`` seconds (0: never).
Socket activation follows sd_listen_fds(3): LISTEN_PID is our PID and LISTEN_FDS counts
the descriptors passed from fd 3 on.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rootless.errors import RootlessError

if TYPE_CHECKING:
    from rootless.context import Context

SD_LISTEN_FDS_START = 3


def default_socket(ctx: Context) -> Path:
    return ctx.layout.runroot / "rootless.sock"


def parse_uri(uri: str) -> Path:
    """unix:///path (or unix://relative, or a bare path) → the socket path."""
    if uri.startswith("unix://"):
        path = uri[len("unix://"):]
    elif "://" in uri or uri.startswith("tcp:"):
        raise RootlessError(f"URI {uri!r}: only unix:// sockets are served",
                            hint="give unix:///path/to/socket; a TCP socket would let anyone on the "
                                 "network act as you")
    else:
        path = uri
    if not path:
        raise RootlessError(f"URI {uri!r}: no socket path", hint="e.g. unix://$XDG_RUNTIME_DIR/rootless/rootless.sock")
    return Path(path).absolute()


def activated_socket() -> socket.socket | None:
    """The listening socket systemd passed (sd_listen_fds(3)), None when not socket-activated."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        n = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        n = 0
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)  # not for the containers and helpers we start
    if n < 1:
        return None
    for fd in range(SD_LISTEN_FDS_START + 1, SD_LISTEN_FDS_START + n):
        os.close(fd)  # one socket is served; the others are not ours to keep
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        raise RootlessError("the socket passed by systemd is not a unix stream socket",
                            hint="use ListenStream=%t/rootless/rootless.sock in rootless.socket")
    os.set_inheritable(sock.fileno(), False)
    return sock


def bind_unix(path: Path) -> socket.socket:
    """Listen on *path*: 0600 in a 0700 directory, so only this user gets in."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists() or path.is_symlink():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)  # left by a service that died
        except OSError as e:
            raise RootlessError(f"{path}: {e.strerror}") from None
        else:
            raise RootlessError(f"{path}: another service is already listening there",
                                hint="stop it, or give another socket: rootless system service unix:///PATH")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the socket is created 0600: no window where others could connect
    try:
        sock.bind(str(path))
    except OSError as e:
        sock.close()
        raise RootlessError(f"bind {path}: {e.strerror}",
                            hint="unix socket paths are limited to 107 bytes" if len(str(path)) > 107 else None) \
            from None
    finally:
        os.umask(old)
    return sock


def preload() -> None:
    """What every request needs, imported once in the parent (children share it copy-on-write)."""
    from rootless import lifecycle  # noqa: F401
    from rootless.api import router  # noqa: F401
    from rootless.image import present  # noqa: F401


def serve(ctx: Context, uri: str | None, idle: float) -> int:
    sock = activated_socket()
    path: Path | None = None
    if sock is None:
        path = parse_uri(uri) if uri else default_socket(ctx)
        sock = bind_unix(path)
        sock.listen(128)
    stop = False

    def terminate(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    # SIGCHLD wakes the loop (through the wakeup fd) so a closed connection starts the idle clock.
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda s, f: None)
    preload()
    children: set[int] = set()
    last = time.monotonic()
    try:
        while not stop:
            while children:
                try:
                    pid, _ = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    children.clear()
                    break
                if pid == 0:
                    break
                children.discard(pid)
                last = time.monotonic()
            timeout: float | None = None
            if idle > 0 and not children:
                timeout = idle - (time.monotonic() - last)
                if timeout <= 0:
                    break
            try:
                ready, _, _ = select.select([sock.fileno(), wake_r], [], [], timeout)
            except InterruptedError:
                continue
            if wake_r in ready:
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
            if sock.fileno() not in ready:
                continue
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue
            last = time.monotonic()
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    signal.set_wakeup_fd(-1)
                    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                        signal.signal(s, signal.SIG_DFL)
                    sock.close()
                    os.close(wake_r)
                    os.close(wake_w)
                    from rootless.api import router

                    router.serve_connection(ctx, conn, keepalive=idle if idle > 0 else 300.0)
                except BaseException:
                    code = 1
                finally:
                    for stream in (sys.stdout, sys.stderr):
                        try:
                            stream.flush()
                        except (OSError, ValueError):
                            pass
                    os._exit(code)
            children.add(pid)
            conn.close()
    finally:
        sock.close()
        if path is not None:
            path.unlink(missing_ok=True)
    return 0
