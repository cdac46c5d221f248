"""Run flags → seccomp, rlimits and sysctls (rootless.image.confine), with rootless Podman's defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from rootless.config import parse
from rootless.errors import ConfigError, RootlessError
from rootless.image.confine import HostLimits, parse_ulimit, rlimits, seccomp, sysctls
from rootless.spec import Rlimit, Seccomp

HOST = HostLimits(rlimits={"RLIMIT_NOFILE": (1024, 20000), "RLIMIT_NPROC": (96363, 96363),
                           "RLIMIT_CORE": (0, -1)}, pid_max=32768)


def test_podmans_nofile_and_nproc_defaults() -> None:
    assert rlimits((), (), HOST) == (Rlimit("RLIMIT_NOFILE", 20000, 20000), Rlimit("RLIMIT_NPROC", 32768, 32768))
    big = HostLimits(rlimits={"RLIMIT_NOFILE": (1024, -1), "RLIMIT_NPROC": (5, 2000000)}, pid_max=4194304)
    assert rlimits((), (), big) == (Rlimit("RLIMIT_NOFILE", 1048576, 1048576),
                                    Rlimit("RLIMIT_NPROC", 1048576, 1048576))


def test_flags_override_config_which_overrides_defaults() -> None:
    got = {r.type: (r.soft, r.hard) for r in rlimits(("nofile=100",), ("nofile=300:400", "core=0:-1"), HOST)}
    assert got == {"RLIMIT_NOFILE": (100, 100), "RLIMIT_NPROC": (32768, 32768), "RLIMIT_CORE": (0, -1)}
    assert rlimits(("host",), ("nofile=1:1",), HOST) == ()
    assert parse_ulimit("nofile=-1", HOST) == Rlimit("RLIMIT_NOFILE", 20000, 20000)


@pytest.mark.parametrize(("text", "needle"), [
    ("nofile=20001", "above your hard limit 20000"),
    ("nofile=10:20001", "above your hard limit 20000"),
    ("nofile=20:10", "soft limit 20 is above the hard limit 10"),
    ("bogus=1", "unknown limit 'bogus'"),
    ("nofile", "expected NAME=SOFT[:HARD]"),
    ("nofile=lots", "'lots' is not a number"),
])
def test_bad_ulimits(text: str, needle: str) -> None:
    with pytest.raises(RootlessError) as e:
        rlimits((text,), (), HOST)
    assert needle in e.value.message
    if "hard limit 20000" in needle:
        assert "ulimit -H -n" in (e.value.hint or "")


def test_ulimit_host_alone() -> None:
    with pytest.raises(RootlessError):
        rlimits(("host", "nofile=1"), (), HOST)


def test_sysctls() -> None:
    assert sysctls((), own_network=True) == (("net.ipv4.ping_group_range", "0 0"),)
    assert sysctls((), own_network=False) == ()
    assert dict(sysctls(("net.ipv4.ping_group_range=0 1000", "kernel.shmmax=1", "fs.mqueue.msg_max=20",
                         "net/ipv4/ip_forward=1"), own_network=True)) == {
        "net.ipv4.ping_group_range": "0 1000", "kernel.shmmax": "1", "fs.mqueue.msg_max": "20",
        "net.ipv4.ip_forward": "1"}
    for bad in ("kernel.pid_max=1", "vm.swappiness=1", "kernel.domainname=x"):
        with pytest.raises(RootlessError, match="not a namespaced sysctl"):
            sysctls((bad,), own_network=True)
    with pytest.raises(RootlessError, match="shares another.s network namespace"):
        sysctls(("net.ipv4.ip_forward=1",), own_network=False)
    with pytest.raises(RootlessError, match="KEY=VALUE"):
        sysctls(("net.ipv4.ip_forward",), own_network=True)


def test_seccomp_option(tmp_path: Path) -> None:
    assert seccomp((), False, "/", "/c") == Seccomp(None, "/c")
    assert seccomp((), True, "/", "/c") is None
    assert seccomp(("seccomp=unconfined",), False, "/", "/c") is None
    (tmp_path / "p.json").write_text("{}")
    assert seccomp(("seccomp=p.json",), True, str(tmp_path), "/c") == Seccomp(str(tmp_path / "p.json"), "/c")
    with pytest.raises(RootlessError, match="No such file"):
        seccomp(("seccomp=missing.json",), False, str(tmp_path), "/c")
    with pytest.raises(RootlessError, match="no profile given"):
        seccomp(("seccomp=",), False, "/", "/c")


def test_config_default_ulimits(tmp_path: Path) -> None:
    cfg = parse('[containers]\ndefault-ulimits = ["nofile=1024:2048"]\n', tmp_path / "c.toml")
    assert cfg.default_ulimits == ("nofile=1024:2048",)
    with pytest.raises(ConfigError, match="NAME=SOFT"):
        parse('[containers]\ndefault-ulimits = ["nofile"]\n', tmp_path / "c.toml")
