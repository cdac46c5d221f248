"""`rootless system service`: the listening socket, one process per connection, idle exit.

The loop is single-threaded and forks a child per connection. Every engine call (create,
start, exec, pull) forks and enters namespaces itself; a forked child of a single-threaded
parent is as safe a place for that as the CLI is, which a thread of a threaded server is not
(fork(2) in a multi-threaded process copies only the calling thread, and a lock another
thread held stays locked forever in the child). It also isolates requests: a handler that
blocks (a followed log, an attach stream, a wait) or crashes holds only its own process, and
cwd, umask and signal dispositions an engine call changes never leak into the next request.

What a request costs beyond its handler is cut three ways. The children are forked ahead of
time: SPARES of them wait in accept(2) on the listening socket, and each that takes a
connection tells the parent, which forks the next, so no client waits for a fork. The parent
serves a few requests without side effects to itself before it listens (preload), so every
code path and module they use is loaded and warm, copy-on-write, in each child. And the
parent's objects are frozen out of the garbage collector, which would otherwise touch (and
so copy) every page of them in each child.

Idle: the service exits once no connection has been open for ``idle`` seconds (0: never).
Socket activation follows sd_listen_fds(3): LISTEN_PID is our PID and LISTEN_FDS counts
the descriptors passed from fd 3 on.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import struct
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


# Requests without side effects that the parent serves to itself before listening: each path
# they take (h11's first parse and send, the error answers, the modules and caches the
# handlers load on first use) is then warm in every child, where a cold first request costs
# ten times a warm one. A child is a fresh copy for each connection, so nothing it warms up
# survives it.
_WARM = (b"HEAD /_ping HTTP/1.1\r\nHost: warm\r\n\r\n"
         b"GET /v1.44/version HTTP/1.1\r\nHost: warm\r\n\r\n"
         b"GET /v1.44/containers/json?all=1 HTTP/1.1\r\nHost: warm\r\n\r\n"
         b"GET /v1.44/images/json HTTP/1.1\r\nHost: warm\r\n\r\n"
         b"GET /v1.44/containers/rootless-warm-up/json HTTP/1.1\r\nHost: warm\r\n\r\n"
         b"GET /v1.44/exec/0/json HTTP/1.1\r\nHost: warm\r\n\r\n"
         b"GET /v1.44/no-such-endpoint HTTP/1.1\r\nHost: warm\r\n\r\n")


# What creating, starting and entering a container loads (engine, spec generation, the
# runtime and its ctypes): imported by every `docker run` and `docker exec` otherwise.
_PRELOAD = ("rootless.lifecycle", "rootless.image.present", "rootless.engine", "rootless.runflags",
            "rootless.image.specgen", "rootless.runtime.run", "rootless.runtime.nsexec", "rootless.runtime.process",
            "rootless.runtime.seccomp", "rootless.runtime.tty", "rootless.runtime.users", "storage.rootfs",
            "storage.drivers.probe", "storage.drivers.overlay", "rootless.events", "rootless.image.limits",
            "rootless.names", "rootless.runtime.launcher", "slirp.config", "pwd", "hashlib")


def warm_up(ctx: Context) -> None:
    """Serve _WARM to ourselves, quietly."""
    from rootless.api import router

    level = ctx.log.level
    ctx.log.level = max(level, 30)  # the warm-up is not logged as requests are
    ours, theirs = socket.socketpair()
    try:
        ours.sendall(_WARM)
        ours.shutdown(socket.SHUT_WR)
        try:
            router.serve_connection(ctx, theirs, keepalive=1.0)
        except Exception as e:  # a store that cannot be read yet must not stop the service
            ctx.log.debug(f"api: warm-up: {type(e).__name__}: {e}")
    finally:
        ours.close()
        ctx.log.level = level


def preload(ctx: Context) -> None:
    """What every request needs, loaded once in the parent (children share it copy-on-write)."""
    import gc
    import importlib

    for name in _PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError as e:  # a module renamed since: the service still works, only colder
            ctx.log.debug(f"api: preload {name}: {e}")
    # The light records' dataclass fields, which dataclasses.replace asks for (exec, create):
    # built on first access (rootless.record), so once here rather than in every child.
    for mod in list(sys.modules.values()):
        if mod is not None and mod.__name__.startswith(("rootless.", "storage.", "slirp.")):
            for obj in list(vars(mod).values()):
                if isinstance(obj, type) and "__record__" in obj.__dict__:
                    obj.__dataclass_fields__  # noqa: B018 - the access builds and caches them
    warm_up(ctx)
    # Objects made so far are never collected: the collector would otherwise touch each of
    # them in every child, copying the parent's pages one by one (gc.freeze, Python 3.7+).
    gc.freeze()


SPARES = 3  # forked ahead: a docker CLI command opens up to three connections at once (run: attach, wait)
REFILL_AFTER = 0.25  # seconds after a connection came, when spares are made again even beside one


def _spare(ctx: Context, sock: socket.socket, note_w: int, close: tuple[int, ...], keepalive: float,
           warm: bool) -> None:
    """A forked child that waits for a connection, tells the parent it took one (its PID on
    *note_w*, one atomic pipe write), then serves it and exits. Forked before the client
    comes, it spares the client the fork and what follows it."""
    code = 0
    try:
        signal.set_wakeup_fd(-1)
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(s, signal.SIG_DFL)
        for fd in close:
            os.close(fd)
        # Once more here: the pages a request writes (reference counts, caches) are copied
        # from the parent now, while no client waits (unless one may already: *warm* false).
        if warm:
            warm_up(ctx)
        while True:
            try:
                conn, _ = sock.accept()
                break
            except (InterruptedError, ConnectionAbortedError, BlockingIOError):
                continue
            except OSError:  # EMFILE and the like: wait for it to pass rather than exit and be re-forked
                time.sleep(0.1)
        sock.close()
        os.write(note_w, struct.pack("=I", os.getpid()))
        os.close(note_w)
        from rootless.api import router

        router.serve_connection(ctx, conn, keepalive=keepalive)
    except BaseException:
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


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
    # A spare that accepts a connection says so here, and the parent forks the next spare.
    note_r, note_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    sock.setblocking(True)  # the spares block in accept(2); a socket from systemd may be non-blocking
    preload(ctx)
    spares: set[int] = set()  # waiting in accept(2)
    busy: set[int] = set()  # serving a connection
    last = time.monotonic()
    keepalive = idle if idle > 0 else 300.0
    try:
        while not stop:
            # Spares are made again while no client is being served (a fork beside a request
            # takes the CPU it needs), unless none is left or the last came a while ago.
            now = time.monotonic()
            while len(spares) < SPARES and (not spares or not busy or now - last >= REFILL_AFTER):
                pid = os.fork()
                if pid == 0:
                    _spare(ctx, sock, note_w, (wake_r, wake_w, note_r), keepalive, warm=bool(spares) or not busy)
                spares.add(pid)
            timeout: float | None = None
            if len(spares) < SPARES:
                timeout = max(0.0, REFILL_AFTER - (now - last))
            elif idle > 0 and not busy:
                timeout = max(0.0, idle - (now - last))
            try:
                ready, _, _ = select.select([note_r, wake_r], [], [], timeout)
            except InterruptedError:
                continue
            if note_r in ready:
                try:
                    while data := os.read(note_r, 4 * 64):
                        for (pid,) in struct.iter_unpack("=I", data):
                            spares.discard(pid)
                            busy.add(pid)
                except BlockingIOError:
                    pass
                last = time.monotonic()
            if wake_r in ready:
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
            while True:
                try:
                    pid, _ = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                if pid in busy:
                    last = time.monotonic()
                busy.discard(pid)
                spares.discard(pid)
            if idle > 0 and not busy and time.monotonic() - last >= idle:
                break
    finally:
        try:  # a spare that has just taken a connection serves it to the end
            while data := os.read(note_r, 4 * 64):
                spares.difference_update(pid for (pid,) in struct.iter_unpack("=I", data))
        except BlockingIOError:
            pass
        for pid in spares:
            # SIGKILL: a spare forked an instant ago may still have our SIGTERM handler
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        sock.close()
        if path is not None:
            path.unlink(missing_ok=True)
    return 0
