"""The seccomp profile evaluator and compiler: the built-in default against Podman's installed
profile, and the compiled BPF's verdicts (run in tests/bpf.py's interpreter) against the rules."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rootless.image.specgen import DEFAULT_CAPS
from rootless.runtime import seccomp
from rootless.runtime.seccomp import (
    ACT_ALLOW,
    ACT_ERRNO,
    SeccompError,
    evaluate,
    verdict,
)
from tests import bpf

INSTALLED = Path("/usr/share/containers/seccomp.json")
X86_64 = os.uname().machine == "x86_64"
ENOSYS, EPERM, EINVAL = 38, 1, 22
AF_NETLINK, NETLINK_AUDIT = 16, 9


def default_text() -> bytes:
    return Path(seccomp.DEFAULT_PROFILE).read_bytes()


def ev_default(caps: tuple[str, ...] = DEFAULT_CAPS) -> seccomp.Evaluated:
    return evaluate(default_text(), "default", caps, "x86_64", "6.1.0")


# name, args, capabilities (None: Podman's default eleven), the expected action
TABLE = [
    ("read", (), None, ACT_ALLOW),
    ("execve", (), None, ACT_ALLOW),
    ("clone", (), None, ACT_ALLOW),
    ("keyctl", (), None, ACT_ALLOW),
    ("mkdir", (), None, ACT_ALLOW),
    ("unshare", (), None, ACT_ALLOW),
    ("vmsplice", (), None, ACT_ERRNO | EPERM),
    ("sysfs", (), None, ACT_ERRNO | EPERM),
    ("kexec_load", (), None, ACT_ERRNO | EPERM),
    ("userfaultfd", (), None, ACT_ERRNO | EPERM),
    ("bpf", (), None, ACT_ERRNO | EPERM),
    ("bpf", (), ("CAP_SYS_ADMIN",), ACT_ALLOW),
    ("setns", (), None, ACT_ALLOW),  # in the allow-list too: the first rule wins, as under Podman
    ("sethostname", (), None, ACT_ERRNO | EPERM),
    ("chroot", (), None, ACT_ALLOW),  # CAP_SYS_CHROOT is among the defaults
    ("chroot", (), ("CAP_CHOWN",), ACT_ERRNO | EPERM),
    ("ptrace", (), None, ACT_ALLOW),
    ("kcmp", (), None, ACT_ERRNO | EPERM),
    ("kcmp", (), ("CAP_SYS_PTRACE",), ACT_ALLOW),
    ("personality", (0,), None, ACT_ALLOW),
    ("personality", (0xFFFFFFFF,), None, ACT_ALLOW),
    ("personality", (0x0040000,), None, ACT_ERRNO | ENOSYS),
    ("socket", (AF_NETLINK, 3, NETLINK_AUDIT), None, ACT_ERRNO | EINVAL),
    ("socket", (AF_NETLINK, 3, 0), None, ACT_ALLOW),
    ("socket", (2, 1, 0), None, ACT_ALLOW),
    ("socket", (AF_NETLINK, 3, NETLINK_AUDIT), ("CAP_AUDIT_WRITE",), ACT_ALLOW),
    ("arch_prctl", (), None, ACT_ALLOW),
    ("reboot", (), None, ACT_ALLOW),
    ("open_by_handle_at", (), None, ACT_ERRNO | EPERM),
    ("no_such_call_anywhere", (), None, ACT_ERRNO | ENOSYS),
]


@pytest.mark.parametrize(("name", "args", "caps", "expected"), TABLE)
def test_default_profile_verdicts(name: str, args: tuple[int, ...], caps: tuple[str, ...] | None,
                                  expected: int) -> None:
    assert verdict(ev_default(caps or DEFAULT_CAPS), name, args) == expected


def _names(text: bytes) -> set[str]:
    return {n for s in json.loads(text)["syscalls"] for n in s["names"]}


@pytest.mark.skipif(not INSTALLED.exists(), reason="containers-common's seccomp.json is not installed")
@pytest.mark.parametrize("caps", [DEFAULT_CAPS, (), ("CAP_SYS_ADMIN", "CAP_AUDIT_WRITE", "CAP_SYS_PTRACE"),
                                  tuple(seccomp_caps for seccomp_caps in (
                                      "CAP_DAC_READ_SEARCH", "CAP_SYS_MODULE", "CAP_SYS_PACCT", "CAP_SYS_RAWIO",
                                      "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_SYS_BOOT", "CAP_SYS_NICE",
                                      "CAP_SYSLOG", "CAP_SYS_RESOURCE"))])
@pytest.mark.parametrize("machine", ["x86_64", "aarch64", "s390x"])
def test_default_profile_equals_podmans_installed_one(caps: tuple[str, ...], machine: str) -> None:
    ours_text, theirs_text = default_text(), INSTALLED.read_bytes()
    assert _names(ours_text) == _names(theirs_text)
    ours = evaluate(ours_text, "ours", caps, machine, "6.1.0")
    theirs = evaluate(theirs_text, "installed", caps, machine, "6.1.0")
    assert (ours.default_action, ours.arches, ours.flags) == (theirs.default_action, theirs.arches, theirs.flags)
    probes = [(), (0,), (8,), (0x20000,), (0xFFFFFFFF,), (0x40000,), (AF_NETLINK, 3, NETLINK_AUDIT),
              (AF_NETLINK, 3, 0), (2, 1, NETLINK_AUDIT)]
    for name in sorted(_names(theirs_text)):
        for args in probes:
            assert verdict(ours, name, args) == verdict(theirs, name, args), (name, args)


@pytest.fixture(scope="module")
def lib() -> object:
    try:
        return seccomp._libseccomp()
    except SeccompError as e:
        pytest.skip(e.message)


def compiled(tmp_path: Path, text: bytes, caps: tuple[str, ...] = DEFAULT_CAPS) -> bytes:
    p = tmp_path / "profile.json"
    p.write_bytes(text)
    return seccomp.program(str(p), str(tmp_path / "cache"), caps).program


@pytest.mark.skipif(not X86_64, reason="the syscall numbers below are x86_64's")
def test_compiled_default_profile_agrees_with_the_rules(tmp_path: Path, lib: object) -> None:
    from rootless.runtime.syscalls import Libseccomp

    assert isinstance(lib, Libseccomp)
    for caps in (DEFAULT_CAPS, ("CAP_SYS_ADMIN", "CAP_AUDIT_WRITE")):
        prog = compiled(tmp_path, default_text(), caps)
        ev = ev_default(caps)
        checked = 0
        for name in sorted(_names(default_text())):
            nr = lib.syscall(name)
            if nr < 0:
                continue  # not an x86_64 call: only the 32-bit ABIs reach it
            for args in ((), (0x40000,), (AF_NETLINK, 3, NETLINK_AUDIT), (AF_NETLINK, 3, 0)):
                got = bpf.run(prog, bpf.seccomp_data(nr, bpf.AUDIT_ARCH_X86_64, args))
                assert got == verdict(ev, name, args), (caps, name, args, hex(got))
                checked += 1
        assert checked > 1000
        # a number no profile names gets the default errno, as does an unknown architecture's... not: kill
        assert bpf.run(prog, bpf.seccomp_data(1000, bpf.AUDIT_ARCH_X86_64)) == ACT_ERRNO | ENOSYS


@pytest.mark.skipif(not X86_64, reason="the syscall numbers below are x86_64's")
def test_table_through_the_compiled_filter(tmp_path: Path, lib: object) -> None:
    from rootless.runtime.syscalls import Libseccomp

    assert isinstance(lib, Libseccomp)
    progs: dict[tuple[str, ...], bytes] = {}
    for name, args, caps, expected in TABLE:
        nr = lib.syscall(name)
        if nr < 0:
            continue
        key = caps or DEFAULT_CAPS
        if key not in progs:
            progs[key] = compiled(tmp_path, default_text(), key)
        assert bpf.run(progs[key], bpf.seccomp_data(nr, bpf.AUDIT_ARCH_X86_64, args)) == expected, name


def test_the_cache_is_keyed_by_profile_and_capabilities(tmp_path: Path, lib: object) -> None:
    cache = tmp_path / "cache"
    seccomp.program(None, str(cache), DEFAULT_CAPS)
    seccomp.program(None, str(cache), DEFAULT_CAPS)
    assert len(list(cache.iterdir())) == 1
    seccomp.program(None, str(cache), (*DEFAULT_CAPS, "CAP_SYS_ADMIN"))
    assert len(list(cache.iterdir())) == 2
    f = next(iter(cache.iterdir()))
    # a cached filter is used as it is: the run only loads it
    f.write_bytes(b"\0\0\0\0" + b"\x06\0\0\0\0\0\xff\x7f")
    got = {seccomp.program(None, str(cache), c).program for c in (DEFAULT_CAPS, (*DEFAULT_CAPS, "CAP_SYS_ADMIN"))}
    assert b"\x06\0\0\0\0\0\xff\x7f" in got


def test_custom_profile_errno_and_flags(tmp_path: Path, lib: object) -> None:
    text = json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
                       "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]})
    ev = evaluate(text.encode(), "p", DEFAULT_CAPS, "x86_64", "6.1.0")
    assert ev.flags == 4 and verdict(ev, "mkdir") == ACT_ERRNO | 13 and verdict(ev, "read") == ACT_ALLOW
    p = tmp_path / "p.json"
    p.write_text(text)
    f = seccomp.program(str(p), str(tmp_path / "c"), DEFAULT_CAPS)
    assert f.flags == 4
    if X86_64:
        assert bpf.run(f.program, bpf.seccomp_data(83, bpf.AUDIT_ARCH_X86_64)) == ACT_ERRNO | 13
        assert bpf.run(f.program, bpf.seccomp_data(0, bpf.AUDIT_ARCH_X86_64)) == ACT_ALLOW


def test_includes_and_excludes_on_arches_and_kernel() -> None:
    text = json.dumps({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["a"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm64"]}},
        {"names": ["b"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["amd64"]}},
        {"names": ["c"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "5.8"}},
        {"names": ["d"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_KILL"]}},
    ]}).encode()
    x86 = evaluate(text, "p", DEFAULT_CAPS, "x86_64", "5.4.0-1-amd64")
    arm = evaluate(text, "p", (), "aarch64", "6.1.0")
    assert [r.name for r in x86.rules] == []
    assert [r.name for r in arm.rules] == ["a", "b", "c", "d"]
    assert x86.default_action == ACT_ERRNO | EPERM


@pytest.mark.parametrize(("profile", "message"), [
    (b"{nope", "p.json: $: not JSON"),
    (b"[]", "p.json: $: expected a JSON object"),
    (b'{"defaultAction": "SCMP_ACT_MAYBE"}', 'p.json: defaultAction: unknown action "SCMP_ACT_MAYBE"'),
    (b'{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO"}, '
     b'{"names": ["x"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 7, "value": 1, "op": "SCMP_CMP_EQ"}]}]}',
     "p.json: syscalls[1].args[0].index: a syscall has arguments 0 to 5, not 7"),
    (b'{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": "read", "action": "SCMP_ACT_ERRNO"}]}',
     "p.json: syscalls[0].names: expected a list of strings"),
    (b'{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", '
     b'"args": [{"index": 0, "value": 1, "op": "EQ"}]}]}', 'syscalls[0].args[0].op: unknown operator "EQ"'),
    (b'{"defaultAction": "SCMP_ACT_NOTIFY"}', "SCMP_ACT_NOTIFY needs a seccomp listener"),
])
def test_bad_profiles_name_the_json_path(profile: bytes, message: str) -> None:
    with pytest.raises(SeccompError) as e:
        evaluate(profile, "p.json", DEFAULT_CAPS, "x86_64", "6.1.0")
    assert message in e.value.message
    assert "\n" not in e.value.message


def test_unknown_syscall_names_are_skipped_with_one_warning(tmp_path: Path, lib: object) -> None:
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "no_such_call", "another_fake"], "action": "SCMP_ACT_ERRNO"}]}))
    said: list[str] = []
    seccomp.program(str(p), str(tmp_path / "c"), DEFAULT_CAPS, warn=said.append)
    assert len(said) == 1 and "another_fake, no_such_call" in said[0] and str(p) in said[0]


def test_unreadable_profile_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SeccompError) as e:
        seccomp.program(str(tmp_path / "missing.json"), str(tmp_path / "c"), DEFAULT_CAPS)
    assert e.value.message == f"seccomp profile {tmp_path}/missing.json: No such file or directory"


def test_without_a_cache_the_filter_is_compiled_each_time(tmp_path: Path, lib: object) -> None:
    before = set(os.listdir(tmp_path))
    f = seccomp.program(None, "", DEFAULT_CAPS)
    assert f.program == seccomp.program(None, str(tmp_path / "c"), DEFAULT_CAPS).program
    assert set(os.listdir(tmp_path)) == before | {"c"}
