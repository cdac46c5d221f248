"""The store's user namespace: worker processes for storage, and ``rootless unshare``.

Both map the namespace the same fixed way (idmap.store_maps): container 0 is the user,
1.. the subordinate ranges. The sequence is the one every rootless runtime uses, since
only a process outside the new namespace may run newuidmap on it:

  child: unshare(CLONE_NEWUSER) → "ready" → (parent writes uid_map/gid_map) → "go" →
         setresuid(0) → work
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from rootless import errors
from rootless.errors import CommandNotFoundError, NamespaceError, NotExecutableError, StorageError
from rootless.record import dataclass
from rootless.runtime import childerr, idmap, syscalls
from rootless.runtime.execpath import find_executable
from rootless.runtime.idmap import IdMaps
from rootless.runtime.nsworker import become_root

if TYPE_CHECKING:
    from rootless.context import Log
    from rootless.layout import Layout

WORKER_MODULE = "rootless.runtime.nsworker"
_PARENT_ENV = "ROOTLESS_NSWORKER_PARENT"
_STOP_GRACE = 2.0  # seconds a closing worker gets to finish before SIGKILL


# --- why user namespaces fail ---------------------------------------------------------


@dataclass(frozen=True)
class Blocker:
    sysctl: str
    value: str
    fix: str


def read_sysctl(name: str) -> str | None:
    """The value of sysctl *name* (``user.max_user_namespaces``), or None if the kernel lacks it."""
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as f:
            return f.read().strip()
    except OSError:
        return None


def userns_blockers() -> list[Blocker]:
    """Kernel settings that stop an unprivileged user from creating a usable user namespace."""
    out = []
    persist = "as root; persist it in /etc/sysctl.d/"
    if read_sysctl("user.max_user_namespaces") == "0":
        out.append(Blocker("user.max_user_namespaces", "0",
                           f"sysctl -w user.max_user_namespaces=28633 ({persist})"))
    # Debian and older Ubuntu kernels carry this out-of-tree switch.
    if read_sysctl("kernel.unprivileged_userns_clone") == "0":
        out.append(Blocker("kernel.unprivileged_userns_clone", "0",
                           f"sysctl -w kernel.unprivileged_userns_clone=1 ({persist})"))
    # Ubuntu 23.10+: the namespace is created but confined to a profile without
    # capabilities, so mounts and chown inside it fail with EPERM.
    if read_sysctl("kernel.apparmor_restrict_unprivileged_userns") == "1":
        out.append(Blocker(
            "kernel.apparmor_restrict_unprivileged_userns", "1",
            "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (as root), or give rootless an "
            "AppArmor profile that allows `userns,` (see /etc/apparmor.d/ and apparmor.d(5))"))
    return out


def userns_error(err: OSError) -> NamespaceError:
    """Turn a failed unshare(CLONE_NEWUSER) into a message naming the setting to change."""
    what = syscalls.describe(err)
    blockers = userns_blockers()
    if blockers:
        b = blockers[0]
        return NamespaceError(f"{what}: user namespaces are disabled ({b.sysctl} = {b.value})", b.fix)
    if err.errno == errno.ENOSPC:
        limit = read_sysctl("user.max_user_namespaces")
        return NamespaceError(f"{what}: the limit of {limit} user namespaces is reached",
                              "raise it: sysctl -w user.max_user_namespaces=28633 (as root)")
    if err.errno == errno.EINVAL:
        return NamespaceError(f"{what}: the process is multithreaded",
                              "this is a bug in rootless: please report it")
    if err.errno == errno.EPERM:
        return NamespaceError(
            f"{what}: unprivileged user namespaces are not allowed here",
            "run on the host rather than inside a container or chroot (a seccomp filter or a "
            "chroot forbids them), or ask the administrator to allow user namespaces")
    return NamespaceError(what)


# --- worker processes ----------------------------------------------------------------


class _WorkerDied(Exception):
    pass


class _Worker:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pid = proc.pid

    def send(self, payload: bytes) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(payload)
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise _WorkerDied(self.status()) from None

    def receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise _WorkerDied(self.status())
        reply: dict[str, Any] = json.loads(line)
        return reply

    def status(self) -> str:
        try:
            rc = self.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return "closed its pipe"
        if rc < 0:
            try:
                return f"killed by {signal.Signals(-rc).name}"
            except ValueError:
                return f"killed by signal {-rc}"
        return f"exit status {rc}"

    def stop(self, grace: float = _STOP_GRACE) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def kill(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass
        self.proc.wait()


class _Spawner:
    """Forks every worker from one long-lived thread.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits (prctl(2)), so
    a worker forked from a short-lived pool thread would be killed with that thread.
    """

    def __init__(self) -> None:
        import queue

        self._q: queue.SimpleQueue[tuple[list[str], dict[str, str], _Box] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="rootless-nsworker-spawner", daemon=True)
        self._thread.start()

    def popen(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        box = _Box()
        self._q.put((argv, env, box))
        box.done.wait()
        if box.error is not None:
            raise box.error
        assert box.proc is not None
        return box.proc

    def stop(self) -> None:
        self._q.put(None)

    def _loop(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            argv, env, box = item
            try:
                # process_group=0: a Ctrl-C at the terminal reaches only the parent,
                # which then closes the workers between calls instead of mid-write.
                box.proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            close_fds=True, process_group=0)
            except BaseException as e:
                box.error = e
            box.done.set()


class _Box:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.proc: subprocess.Popen[bytes] | None = None
        self.error: BaseException | None = None


class StoreNamespace:
    """storage's NamespaceRunner: runs functions as root of the store's user namespace.

    Workers start lazily, at most *workers* at once, and are reused; ``call`` is
    thread-safe. Use as a context manager, or call ``close()``.
    """

    def __init__(self, layout: Layout, log: Log, workers: int | None = None, *,
                 maps: IdMaps | None = None, user: str | None = None) -> None:
        self.layout = layout
        self.log = log
        self.max_workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
        self._maps = maps
        self._user = user
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._live: set[_Worker] = set()
        self._starting = 0
        self._closed = False
        self._spawner: _Spawner | None = None

    @property
    def user(self) -> str:
        if self._user is None:
            self._user = idmap.current_user()
        return self._user

    @property
    def maps(self) -> IdMaps:
        """The store's fixed mapping (what a layer's owners are translated with)."""
        if self._maps is None:
            self._maps = idmap.store_maps(os.getuid(), os.getgid(), self.user)
        return self._maps

    def __enter__(self) -> StoreNamespace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, func: str, **kwargs: Any) -> Any:
        payload = json.dumps({"func": func, "kwargs": kwargs}, separators=(",", ":")).encode() + b"\n"
        worker = self._checkout()
        try:
            worker.send(payload)
            reply = worker.receive()
        except _WorkerDied as e:
            self._discard(worker)
            raise StorageError(
                f"{func}: the store namespace worker (pid {worker.pid}) died: {e}",
                "run again with --log-level debug; the worker's own messages are on stderr",
            ) from None
        except BaseException:
            # interrupted mid-call (Ctrl-C): the worker's state is unknown
            self._discard(worker, kill=True)
            raise
        self._checkin(worker)
        if "error" in reply:
            self._raise_remote(func, reply["error"])
        return reply.get("ok")

    def close(self) -> None:
        with self._cond:
            self._closed = True
            workers = list(self._live)
            self._live.clear()
            self._idle.clear()
            spawner, self._spawner = self._spawner, None
            self._cond.notify_all()
        for w in workers:
            w.stop()
        if spawner is not None:
            spawner.stop()

    def abort(self) -> None:
        """Ctrl-C: end every call now. The workers are killed mid-call; what they were writing
        is a tmp entry of the store, whose lock outlives nobody, so the next pull removes it
        (storage.layers.LayerStore.cleanup_tmp). Later calls fail: the namespace is closed."""
        with self._cond:
            self._closed = True
            workers = list(self._live)
            self._cond.notify_all()
        for w in workers:
            try:
                w.proc.kill()
            except OSError:
                pass

    # --- pool ---

    def _checkout(self) -> _Worker:
        maps = self.maps  # may raise (unreadable /etc/subuid) before any state changes
        with self._cond:
            while True:
                if self._closed:
                    raise StorageError("the store namespace is closed")
                if self._idle:
                    return self._idle.pop()
                if len(self._live) + self._starting < self.max_workers:
                    if maps.single:
                        # under the lock: Log.warn_once is not itself thread-safe
                        key, msg, hint = idmap.single_mapping_warning(maps, self.user)
                        self.log.warn_once(key, msg, hint, store=True)
                    self._starting += 1
                    if self._spawner is None:
                        self._spawner = _Spawner()
                    spawner = self._spawner
                    break
                self._cond.wait()
        try:
            worker = self._start(spawner)
        except BaseException:
            with self._cond:
                self._starting -= 1
                self._cond.notify()
            raise
        with self._cond:
            self._starting -= 1
            if not self._closed:
                self._live.add(worker)
                return worker
        worker.kill()
        raise StorageError("the store namespace is closed")

    def _checkin(self, worker: _Worker) -> None:
        with self._cond:
            if worker in self._live:
                self._idle.append(worker)
                self._cond.notify()
                return
        worker.stop()  # closed meanwhile

    def _discard(self, worker: _Worker, kill: bool = False) -> None:
        with self._cond:
            self._live.discard(worker)
            self._cond.notify()
        if kill:
            worker.kill()
        else:
            worker.stop(grace=0.5)

    def _start(self, spawner: _Spawner) -> _Worker:
        maps = self.maps
        env = dict(os.environ)
        env[_PARENT_ENV] = str(os.getpid())
        # -S skips site (and the editable-install finder: ~10 ms); our own packages come
        # from PYTHONPATH, everything else from the parent's sys.path sent with "go".
        pkg_parent = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH")) if p)
        proc = spawner.popen([sys.executable, "-S", "-m", WORKER_MODULE], env)
        worker = _Worker(proc)
        self.log.debug(f"store namespace worker {proc.pid} started")
        try:
            msg = worker.receive()
            if "error" in msg:
                raise userns_error(_remote_oserror(msg["error"]))
            idmap.apply(proc.pid, maps, self.user)
            worker.send(json.dumps({"go": {"sys_path": [p for p in sys.path if p]}}).encode() + b"\n")
            msg = worker.receive()
            if "error" in msg:
                raise NamespaceError(
                    f"become root in the store namespace: {syscalls.describe(_remote_oserror(msg['error']))}")
        except _WorkerDied as e:
            worker.kill()
            raise NamespaceError(f"the store namespace worker (pid {proc.pid}) exited while starting: {e}",
                                 "its messages are on stderr above") from None
        except BaseException:
            worker.kill()
            raise
        return worker

    def _raise_remote(self, func: str, err: dict[str, Any]) -> NoReturn:
        f = childerr.ChildFailure.from_dict(err)
        if f.traceback:
            self.log.debug(f"{func} failed in the store namespace:\n{f.traceback.rstrip()}")
        cls = getattr(errors, f.type, None)
        if isinstance(cls, type) and issubclass(cls, errors.RootlessError):
            raise cls(f.message, f.hint) from None
        if _is_oserror(f.type):
            raise f.oserror() from None
        raise StorageError(f"{func}: {f.message}") from None


def _is_oserror(name: str) -> bool:
    import builtins

    cls = getattr(builtins, name, None)
    return isinstance(cls, type) and issubclass(cls, OSError)


def _remote_oserror(err: Mapping[str, Any]) -> OSError:
    return childerr.ChildFailure.from_dict(dict(err)).oserror()


# --- forking a mapped child (rootless unshare, doctor) -------------------------------


# what a mapped child reported before it exec'd or finished: its stage ("unshare", "setup" or
# "run"), errno and text (rootless.runtime.childerr's one format)
ChildFailure = childerr.ChildFailure


def _child(flags: int, target: Callable[[], object], report: int, go: int,
           sigmask: Iterable[int] | None) -> NoReturn:
    stage = "unshare"
    code = 0
    try:
        if sigmask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, sigmask)
        # Python ignores SIGPIPE and SIGXFSZ; an exec'd program must get the defaults
        # back (as subprocess's restore_signals does), or `yes | head` never ends.
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        syscalls.set_pdeathsig(signal.SIGKILL)
        syscalls.unshare(flags)
        os.write(report, b"R")
        if os.read(go, 1) != b"G":
            os._exit(1)
        stage = "setup"
        become_root()
        stage = "run"
        target()
    except BaseException as e:
        childerr.report(report, stage, e)
        code = 1
    os._exit(code)


def fork_mapped(maps: IdMaps, flags: int, target: Callable[[], object], *, user: str | None = None,
                sigmask: Iterable[int] | None = None) -> tuple[int, ChildFailure | None]:
    """Fork a child that unshares *flags* (CLONE_NEWUSER among them), gets *maps*, becomes
    root in the namespace and runs *target* (typically an exec).

    Returns the child's pid once *target* has exec'd (the report pipe is close-on-exec, as
    crun's sync pipe is) or finished, together with what failed in the child, if anything.
    The caller reaps the child. Raises NamespaceError if the parent cannot map it.
    """
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(report_r)
        os.close(go_w)
        _child(flags, target, report_w, go_r, sigmask)
    os.close(report_w)
    os.close(go_r)
    try:
        first = os.read(report_r, 1)
        if first == b"R":
            try:
                idmap.apply(pid, maps, user)
            except BaseException:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise
            os.write(go_w, b"G")
            os.close(go_w)
            go_w = -1
            rest = childerr.read_all(report_r)
        else:
            rest = first + childerr.read_all(report_r)
    finally:
        os.close(report_r)
        if go_w >= 0:
            os.close(go_w)
    return pid, childerr.decode(rest)


def wait_status(pid: int) -> int:
    """Reap *pid*; its exit code, or 128+N when killed by signal N (the shell's convention)."""
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def run_in_userns(maps: IdMaps, flags: int, target: Callable[[], object], user: str | None = None) -> None:
    """Run *target* in a forked, mapped child and wait; raise if it failed."""
    pid, failure = fork_mapped(maps, flags, target, user=user)
    status = wait_status(pid)
    if failure is not None:
        if failure.stage == "unshare":
            raise userns_error(_unshare_oserror(failure, flags))
        raise NamespaceError(failure.message)
    if status != 0:
        raise NamespaceError(f"the namespace child exited with status {status}")


def _unshare_oserror(f: ChildFailure, flags: int) -> OSError:
    return OSError(f.errno, os.strerror(f.errno), f"unshare {syscalls.ns_names(flags)} namespace")


_FORWARDED = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
# siginfo si_code values (<asm-generic/siginfo.h>): <= 0 means sent by a process
# (SI_USER 0, SI_QUEUE -1, SI_TKILL -6); the terminal's SIGINT comes as SI_KERNEL
# and already reached the child, which shares our process group.
_SI_USER_MAX = 0


def run_in_store_ns(layout: Layout, log: Log, argv: list[str] | None = None,
                    env: Mapping[str, str] | None = None, *, maps: IdMaps | None = None) -> int:
    """``rootless unshare``: run *argv* as root of the store's user namespace, in a new mount namespace.

    Returns the command's exit status (128+N if killed by signal N). Raises
    CommandNotFoundError (127) / NotExecutableError (126) if it cannot be executed.
    """
    user = idmap.current_user()
    if maps is None:
        maps = idmap.store_maps(os.getuid(), os.getgid(), user)
    if maps.single:
        key, msg, hint = idmap.single_mapping_warning(maps, user)
        log.warn_once(key, msg, hint, store=True)
    base = dict(os.environ if env is None else env)
    if not argv:
        argv = [base.get("SHELL") or "/bin/sh"]
    base["ROOTLESS_UNSHARE"] = "1"
    base["CONTAINERS_GRAPHROOT"] = str(layout.root)
    base["CONTAINERS_RUNROOT"] = str(layout.runroot)
    command = list(argv)

    def exec_command() -> None:
        os.execve(find_executable(command[0], base.get("PATH", os.defpath)), command, base)

    waited = _FORWARDED | {signal.SIGCHLD}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    try:
        pid, failure = fork_mapped(maps, syscalls.CLONE_NEWUSER | syscalls.CLONE_NEWNS, exec_command,
                                   user=user, sigmask=old)
        if failure is not None:
            wait_status(pid)
            raise _exec_error(command[0], failure, syscalls.CLONE_NEWUSER | syscalls.CLONE_NEWNS)
        log.debug(f"unshare: {command!r} is pid {pid}")
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                return 128 - code if code < 0 else code
            info = signal.sigwaitinfo(waited)
            if info.si_signo != signal.SIGCHLD and info.si_code <= _SI_USER_MAX:
                try:
                    os.kill(pid, info.si_signo)
                except ProcessLookupError:
                    pass
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _exec_error(name: str, f: ChildFailure, flags: int) -> errors.RootlessError:
    if f.stage == "unshare":
        return userns_error(_unshare_oserror(f, flags))
    if f.stage != "run":
        return NamespaceError(f"enter the store namespace: {f.message}")
    # The wording of Podman (Go's os/exec) for `podman unshare CMD`.
    if f.errno == errno.ENOENT:
        if "/" in name:
            return CommandNotFoundError(f'exec: "{name}": stat {name}: no such file or directory')
        return CommandNotFoundError(f'exec: "{name}": executable file not found in $PATH')
    if f.errno in (errno.EACCES, errno.EPERM, errno.EISDIR):
        return NotExecutableError(f'exec: "{name}": permission denied')
    if f.errno == errno.ENOEXEC:
        return NotExecutableError(f'exec: "{name}": exec format error')
    return NotExecutableError(f'exec: "{name}": {os.strerror(f.errno).lower()}')
