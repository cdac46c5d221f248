"""Seccomp profiles (the Docker/Podman JSON format) → a compiled filter every container process
loads as its last step before execve(2).

A profile is evaluated for one container: its capability set picks the rules whose
``includes``/``excludes`` name capabilities, the machine picks the architectures (``archMap``)
and the rules limited to some ``arches``; libseccomp (through rootless.runtime.syscalls)
turns the result into classic BPF. That costs tens of milliseconds, so the BPF is kept in the
store, named by the digest of (profile bytes, capabilities, machine, kernel, libseccomp
version): a run reads the file and makes one prctl(2).

Why libseccomp rather than a BPF compiler of our own: it carries every architecture's syscall
table (including the 32-bit and x32 ABIs a 64-bit container can call through), the
multiplexed socketcall/ipc calls and the argument-comparison code for 32-bit ABIs, all of
which a hand-written compiler would have to copy and keep current. Its output is plain
BPF, so nothing of it is needed at run time once the filter is cached.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rootless.errors import RootlessError
from rootless.record import dataclass

DEFAULT_PROFILE = os.path.join(os.path.dirname(__file__), "seccomp.json")
_FORMAT = b"rootless-seccomp-1"

# seccomp(2) return actions, SECCOMP_RET_* (<linux/seccomp.h>); ERRNO and TRACE carry 16 bits of data
ACT_KILL_PROCESS = 0x80000000
ACT_KILL_THREAD = 0x00000000
ACT_TRAP = 0x00030000
ACT_ERRNO = 0x00050000
ACT_TRACE = 0x7FF00000
ACT_LOG = 0x7FFC0000
ACT_ALLOW = 0x7FFF0000
_ACTIONS = {"SCMP_ACT_KILL": ACT_KILL_THREAD, "SCMP_ACT_KILL_THREAD": ACT_KILL_THREAD,
            "SCMP_ACT_KILL_PROCESS": ACT_KILL_PROCESS, "SCMP_ACT_TRAP": ACT_TRAP, "SCMP_ACT_ERRNO": ACT_ERRNO,
            "SCMP_ACT_TRACE": ACT_TRACE, "SCMP_ACT_LOG": ACT_LOG, "SCMP_ACT_ALLOW": ACT_ALLOW}
_OPS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
        "SCMP_CMP_MASKED_EQ")
_FLAGS = {"SECCOMP_FILTER_FLAG_TSYNC": 1, "SECCOMP_FILTER_FLAG_LOG": 2, "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4}
EPERM = 1
# uname(2) machine → the profile's SCMP_ARCH_ name and the Go names its "arches" lists use
_MACHINES = {
    "x86_64": ("SCMP_ARCH_X86_64", ("amd64",)), "aarch64": ("SCMP_ARCH_AARCH64", ("arm64",)),
    "i686": ("SCMP_ARCH_X86", ("386", "x86")), "i386": ("SCMP_ARCH_X86", ("386", "x86")),
    "armv7l": ("SCMP_ARCH_ARM", ("arm",)), "armv6l": ("SCMP_ARCH_ARM", ("arm",)),
    "ppc64le": ("SCMP_ARCH_PPC64LE", ("ppc64le",)), "s390x": ("SCMP_ARCH_S390X", ("s390x",)),
    "riscv64": ("SCMP_ARCH_RISCV64", ("riscv64",)), "mips64": ("SCMP_ARCH_MIPS64", ("mips64",)),
    "mips64el": ("SCMP_ARCH_MIPSEL64", ("mips64le",)),
}


class SeccompError(RootlessError):
    """A seccomp profile that cannot be read or used."""


class NoLibseccomp(SeccompError):
    """libseccomp.so.2 cannot be loaded: no profile can be compiled."""


@dataclass(frozen=True)
class Cond:
    index: int
    op: str
    value: int
    value_two: int = 0


@dataclass(frozen=True)
class Rule:
    """One syscall's rule after includes/excludes were evaluated: what the compiler adds."""

    name: str
    action: int  # with its errno/trace data
    conds: tuple[Cond, ...]
    where: str  # the JSON path, for messages: syscalls[3]


@dataclass(frozen=True)
class Evaluated:
    default_action: int
    arches: tuple[str, ...]  # libseccomp names: x86_64, x86, x32
    flags: int
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class Filter:
    program: bytes  # struct sock_filter[]
    flags: int  # seccomp(2) SECCOMP_FILTER_FLAG_*


# --------------------------------------------------------------------------- reading a profile


def read_profile(path: str | None) -> tuple[str, bytes]:
    """(the name to show, the bytes) of the profile at *path*; None: the built-in default."""
    where = path or DEFAULT_PROFILE
    try:
        with open(where, "rb") as f:
            return where, f.read()
    except OSError as e:
        raise SeccompError(f"seccomp profile {where}: {e.strerror}",
                           "give a readable JSON profile, or --security-opt seccomp=unconfined") from None


def _fail(name: str, where: str, what: str) -> SeccompError:
    return SeccompError(f"seccomp profile {name}: {where}: {what}",
                        "see the Docker/Podman seccomp profile format, e.g. /usr/share/containers/seccomp.json")


def _int(name: str, where: str, v: Any) -> int:
    import json  # the error and compile paths only: not a cached run's

    if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v >= 1 << 64:
        raise _fail(name, where, f"expected an unsigned integer, got {json.dumps(v)}")
    return v


def _strings(name: str, where: str, v: Any) -> list[str]:
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _fail(name, where, "expected a list of strings")
    return v


def _action(name: str, where: str, text: Any, errno_ret: Any, default_errno: int) -> int:
    import json  # the error and compile paths only: not a cached run's

    if text == "SCMP_ACT_NOTIFY":
        raise _fail(name, where, "SCMP_ACT_NOTIFY needs a seccomp listener, which is not supported")
    if not isinstance(text, str) or text not in _ACTIONS:
        raise _fail(name, where, f"unknown action {json.dumps(text)} (one of {', '.join(_ACTIONS)})")
    act = _ACTIONS[text]
    if act in (ACT_ERRNO, ACT_TRACE):
        ret = default_errno if errno_ret is None else _int(name, where.rsplit(".", 1)[0] + ".errnoRet", errno_ret)
        act |= ret & 0xFFFF
    return act


def _kernel_at_least(release: str, wanted: str) -> bool:
    def nums(s: str) -> tuple[int, ...]:
        out = []
        for part in s.split("-")[0].split(".")[:3]:
            digits = "".join(c for c in part if c.isdigit())
            out.append(int(digits or 0))
        return tuple(out)

    return nums(release) >= nums(wanted)


def evaluate(text: bytes, name: str, caps: Iterable[str], machine: str | None = None,
             kernel: str | None = None) -> Evaluated:
    """The rules of the profile *text* that apply to a container with capabilities *caps* on
    *machine* (uname -m) running *kernel* (uname -r); SeccompError naming the JSON path at fault."""
    import json  # the error and compile paths only: not a cached run's

    machine = machine or os.uname().machine
    kernel = kernel or os.uname().release
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise _fail(name, "$", f"not JSON: {e}") from None
    if not isinstance(data, dict):
        raise _fail(name, "$", "expected a JSON object")
    capset = set(caps)
    native, go_arches = _MACHINES.get(machine, (f"SCMP_ARCH_{machine.upper()}", (machine,)))
    default_errno = EPERM
    if data.get("defaultErrnoRet") is not None:
        default_errno = _int(name, "defaultErrnoRet", data["defaultErrnoRet"])
    default = _action(name, "defaultAction", data.get("defaultAction"), default_errno, EPERM)

    arches: list[str] = []
    arch_map = data.get("archMap") or []
    if not isinstance(arch_map, list):
        raise _fail(name, "archMap", "expected a list")
    for i, entry in enumerate(arch_map):
        if not isinstance(entry, dict):
            raise _fail(name, f"archMap[{i}]", "expected an object")
        arch = entry.get("architecture")
        if not isinstance(arch, str):
            raise _fail(name, f"archMap[{i}].architecture", "expected a string")
        if arch == native:
            arches += [arch, *_strings(name, f"archMap[{i}].subArchitectures", entry.get("subArchitectures"))]
    if not arch_map:
        arches = _strings(name, "architectures", data.get("architectures"))
    flags = 0
    for i, f in enumerate(_strings(name, "flags", data.get("flags"))):
        if f not in _FLAGS:
            raise _fail(name, f"flags[{i}]", f"unknown flag {f!r} (one of {', '.join(_FLAGS)})")
        flags |= _FLAGS[f]

    calls = data.get("syscalls") or []
    if not isinstance(calls, list):
        raise _fail(name, "syscalls", "expected a list")
    rules: list[Rule] = []
    for i, call in enumerate(calls):
        where = f"syscalls[{i}]"
        if not isinstance(call, dict):
            raise _fail(name, where, "expected an object")
        names = _strings(name, f"{where}.names", call.get("names"))
        if isinstance(call.get("name"), str):  # the older one-name form
            names = [*names, call["name"]]
        action = _action(name, f"{where}.action", call.get("action"), call.get("errnoRet"), EPERM)
        conds = []
        args = call.get("args") or []
        if not isinstance(args, list):
            raise _fail(name, f"{where}.args", "expected a list")
        for j, a in enumerate(args):
            aw = f"{where}.args[{j}]"
            if not isinstance(a, dict):
                raise _fail(name, aw, "expected an object")
            index = _int(name, f"{aw}.index", a.get("index"))
            if index > 5:
                raise _fail(name, f"{aw}.index", f"a syscall has arguments 0 to 5, not {index}")
            op = a.get("op")
            if op not in _OPS:
                raise _fail(name, f"{aw}.op", f"unknown operator {json.dumps(op)} (one of {', '.join(_OPS)})")
            conds.append(Cond(index, op, _int(name, f"{aw}.value", a.get("value", 0)),
                              _int(name, f"{aw}.valueTwo", a.get("valueTwo", 0))))
        if not _applies(name, where, call, capset, go_arches, kernel):
            continue
        rules += [Rule(n, action, tuple(conds), where) for n in names]
    return Evaluated(default, tuple(_seccomp_arch(a) for a in dict.fromkeys(arches)), flags, tuple(rules))


def _applies(name: str, where: str, call: dict[str, Any], caps: set[str], go_arches: Sequence[str],
             kernel: str) -> bool:
    """Docker's includes/excludes: every included capability held, the machine among the
    included arches, the kernel at least minKernel; no excluded capability held, the machine
    not among the excluded arches."""
    for key in ("includes", "excludes"):
        sel = call.get(key) or {}
        if not isinstance(sel, dict):
            raise _fail(name, f"{where}.{key}", "expected an object")
        sel_caps = _strings(name, f"{where}.{key}.caps", sel.get("caps"))
        sel_arches = _strings(name, f"{where}.{key}.arches", sel.get("arches"))
        min_kernel = sel.get("minKernel")
        if key == "includes":
            if any(c not in caps for c in sel_caps):
                return False
            if sel_arches and not any(a in sel_arches for a in go_arches):
                return False
            if isinstance(min_kernel, str) and min_kernel and not _kernel_at_least(kernel, min_kernel):
                return False
        else:
            if any(c in caps for c in sel_caps):
                return False
            if any(a in sel_arches for a in go_arches):
                return False
    return True


def _seccomp_arch(name: str) -> str:
    """SCMP_ARCH_X86_64 → x86_64 (libseccomp's seccomp_arch_resolve_name spelling)."""
    return name.removeprefix("SCMP_ARCH_").lower()


def _matches(c: Cond, args: Sequence[int]) -> bool:
    v = args[c.index] if c.index < len(args) else 0
    if c.op == "SCMP_CMP_MASKED_EQ":
        return v & c.value == c.value_two
    return {"SCMP_CMP_NE": v != c.value, "SCMP_CMP_LT": v < c.value, "SCMP_CMP_LE": v <= c.value,
            "SCMP_CMP_EQ": v == c.value, "SCMP_CMP_GE": v >= c.value, "SCMP_CMP_GT": v > c.value}[c.op]


def verdict(ev: Evaluated, name: str, args: Sequence[int] = ()) -> int:
    """The action *ev* takes for syscall *name* with *args*, computed from the rules (what the
    compiled filter must agree with; see the unit tests)."""
    for groups in (_rule_groups(r) for r in ev.rules if r.name == name):
        for conds, action in groups:
            if all(_matches(c, args) for c in conds):
                return action
    return ev.default_action


def _rule_groups(r: Rule) -> list[tuple[tuple[Cond, ...], int]]:
    """The libseccomp rules one profile rule becomes. libseccomp cannot AND two comparisons of
    the same argument, so such conditions become one rule each, as runc and crun add them."""
    indexes = [c.index for c in r.conds]
    if len(set(indexes)) == len(indexes):
        return [(r.conds, r.action)]
    return [((c,), r.action) for c in r.conds]


# --------------------------------------------------------------------------- compiling


def compile_filter(ev: Evaluated, name: str, out_fd: int, warn: Callable[[str], None] | None = None) -> None:
    """Write the BPF for *ev* to *out_fd* with libseccomp."""
    from rootless.runtime.syscalls import Libseccomp

    lib = _libseccomp()
    assert isinstance(lib, Libseccomp)
    ctx = lib.init(ev.default_action)
    unknown: list[str] = []
    try:
        for arch in ev.arches:
            token = lib.arch(arch)
            if token == 0:
                raise _fail(name, "archMap", f"architecture {arch!r} is unknown to libseccomp {lib.version()}")
            lib.arch_add(ctx, token, f"seccomp profile {name}: add architecture {arch}")
        for r in ev.rules:
            if r.action == ev.default_action:
                continue  # libseccomp refuses a rule that repeats the default (runc skips them too)
            nr = lib.syscall(r.name)
            if nr == lib.NR_ERROR:
                unknown.append(r.name)
                continue
            for conds, action in _rule_groups(r):
                try:
                    lib.rule_add(ctx, action, nr, [(c.index, c.op, c.value, c.value_two) for c in conds], "")
                except OSError as e:
                    raise _fail(name, r.where, f"syscall {r.name}: libseccomp refused the rule "
                                f"({os.strerror(e.errno or 0)})") from None
        lib.export_bpf(ctx, out_fd, f"seccomp profile {name}: export the filter")
    finally:
        lib.release(ctx)
    if unknown and warn is not None:
        names = ", ".join(sorted(set(unknown)))
        warn(f"seccomp profile {name}: syscalls unknown to libseccomp {lib.version()} skipped: {names}")


_LIB: list[object] = []


def _libseccomp() -> object:
    """libseccomp, loaded once (a cache, not state: it never changes while we run)."""
    if not _LIB:
        from rootless.runtime.syscalls import Libseccomp

        try:
            _LIB.append(Libseccomp())
        except OSError as e:
            raise NoLibseccomp(f"seccomp: cannot load libseccomp.so.2: {e}",
                               "install libseccomp2 (Debian, Ubuntu) or libseccomp (Fedora), or run with "
                               "--security-opt seccomp=unconfined") from None
    return _LIB[0]


def library_version() -> str:
    from rootless.runtime.syscalls import Libseccomp

    lib = _libseccomp()
    assert isinstance(lib, Libseccomp)
    return lib.version()


def _sha256(data: bytes) -> Any:
    # CPython's own sha256 (3.11: _sha256, 3.12: _sha2): hashlib would load OpenSSL's libcrypto,
    # milliseconds on the run path when nothing else there needs it
    try:
        from _sha256 import sha256  # type: ignore[import-not-found]
    except ImportError:
        try:
            from _sha2 import sha256  # type: ignore[import-not-found]
        except ImportError:
            from hashlib import sha256
    return sha256(data)


def cache_key(text: bytes, caps: Iterable[str], machine: str, kernel: str, version: str) -> str:
    h = _sha256(_FORMAT + b"\0")
    for part in (",".join(sorted(caps)), machine, kernel, version):
        h.update(part.encode() + b"\0")
    h.update(text)
    return h.hexdigest()


def program(profile: str | None, cache: str, caps: Sequence[str],
            warn: Callable[[str], None] | None = None) -> Filter:
    """The compiled filter of *profile* (None: the built-in default) for a container with
    capabilities *caps*, from the cache directory *cache* or compiled into it ("": compiled
    for this once, kept nowhere)."""
    name, text = read_profile(profile)
    uname = os.uname()
    key = cache_key(text, caps, uname.machine, uname.release, library_version())
    path = os.path.join(cache, key + ".bpf") if cache else ""
    if path:
        try:
            with open(path, "rb") as f:
                raw = f.read()
            if len(raw) >= 4 and (len(raw) - 4) % 8 == 0:
                return Filter(raw[4:], int.from_bytes(raw[:4], "little"))
        except FileNotFoundError:
            pass
        except OSError as e:
            raise SeccompError(f"read the compiled seccomp filter {path}: {e.strerror}") from None
    ev = evaluate(text, name, caps, uname.machine, uname.release)
    if path:
        os.makedirs(cache, mode=0o700, exist_ok=True)
        tmp = os.path.join(cache, f".{key}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    else:
        tmp, fd = "", os.memfd_create("seccomp", os.MFD_CLOEXEC)
    try:
        os.write(fd, ev.flags.to_bytes(4, "little"))
        compile_filter(ev, name, fd, warn)
        os.lseek(fd, 0, os.SEEK_SET)
        raw = b""
        while chunk := os.read(fd, 65536):
            raw += chunk
        if tmp:
            os.replace(tmp, path)  # readers see no filter or the whole of it
            tmp = ""
    finally:
        os.close(fd)
        if tmp:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return Filter(raw[4:], ev.flags)


def load(f: Filter) -> None:
    """Install *f* in this process: the last step before execve(2)."""
    from rootless.runtime import syscalls

    syscalls.seccomp_load(f.program, f.flags)


def status() -> dict[str, object]:
    """For `info`: whether containers get a filter (the kernel's seccomp and libseccomp), the
    default profile and the library's version (Podman's host.security keys)."""
    kernel = False
    try:
        with open("/proc/self/status") as f:
            kernel = any(line.startswith("Seccomp:") for line in f)
    except OSError:
        pass
    try:
        version: str | None = library_version()
    except SeccompError:
        version = None
    return {"seccompEnabled": kernel and version is not None, "seccompProfilePath": DEFAULT_PROFILE,
            "libseccompVersion": version}
