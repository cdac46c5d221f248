"""What confines a container beyond its namespaces, as the unprivileged user: the seccomp
filter, resource limits and sysctls; compared with rootless Podman on this host where the
test can run it.

The syscall probes are tiny static programs (tests/syscallbin.py) bind-mounted in: each
makes one system call and exits with its errno.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import syscallbin as sb
from tests.integration.conftest import TestImages, need
from tests.integration.harness import Registry, RootlessEnv, assert_clean_error

pytestmark = pytest.mark.integration
X86_64 = os.uname().machine == "x86_64"
EPERM, ENOSYS, EBADF = 1, 38, 9


@pytest.fixture(scope="module")
def rl(rl_shared: RootlessEnv, images: TestImages) -> RootlessEnv:
    images.require("library/busybox:latest")
    rl_shared("pull", "-q", "busybox", check=True)
    return rl_shared


@pytest.fixture(scope="module")
def probes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not X86_64:
        pytest.skip("the probe programs are x86_64 machine code")
    d = tmp_path_factory.mktemp("probes")
    os.chmod(d, 0o755)
    sb.write(d, "sysfs", sb.SYS_SYSFS, (3,))  # the number of file system types: the default profile says EPERM
    sb.write(d, "personality", sb.SYS_PERSONALITY, (0x0040000,))  # not among the allowed personas: ENOSYS
    sb.write(d, "setns", sb.SYS_SETNS, (2**64 - 1, 0))  # allowed by the filter: EBADF from the kernel
    sb.write(d, "mkdir", sb.SYS_MKDIR, (b"/tmp/made-by-probe", 0o755))
    return d


def run(rl: RootlessEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return rl("run", "--rm", "--network", "none", *args)


def status_of(rl: RootlessEnv, probes: Path, probe: str, *flags: str) -> int:
    cp = run(rl, "-v", f"{probes}:/t", *flags, "busybox", f"/t/{probe}")
    assert "Error" not in cp.stderr, cp.stderr
    return cp.returncode


# --------------------------------------------------------------------------- seccomp


def seccomp_line(rl: RootlessEnv, *flags: str) -> str:
    cp = run(rl, *flags, "busybox", "grep", "^Seccomp:", "/proc/self/status")
    assert cp.returncode == 0, cp.stderr
    return " ".join(cp.stdout.split())


def test_a_filter_by_default_none_unconfined_or_privileged(rl: RootlessEnv) -> None:
    assert seccomp_line(rl) == "Seccomp: 2"
    assert seccomp_line(rl, "--security-opt", "seccomp=unconfined") == "Seccomp: 0"
    assert seccomp_line(rl, "--privileged") == "Seccomp: 0"
    assert seccomp_line(rl, "--security-opt", "no-new-privileges") == "Seccomp: 2"


def test_denied_syscalls_fail_as_podmans_profile_says(rl: RootlessEnv, probes: Path) -> None:
    assert status_of(rl, probes, "sysfs") == EPERM
    assert status_of(rl, probes, "personality") == ENOSYS  # defaultErrnoRet
    assert status_of(rl, probes, "setns") == EBADF
    assert status_of(rl, probes, "sysfs", "--security-opt", "seccomp=unconfined") == 0
    assert status_of(rl, probes, "personality", "--security-opt", "seccomp=unconfined") == 0
    # loaded after no_new_privs and the capability drop too, for a user other than root
    assert status_of(rl, probes, "sysfs", "--security-opt", "no-new-privileges", "--user", "1000") == EPERM


def test_a_custom_profile_denying_mkdir(rl: RootlessEnv, tmp_path: Path) -> None:
    profile = tmp_path / "nomkdir.json"
    profile.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}))
    cp = run(rl, "--security-opt", f"seccomp={profile}", "busybox", "mkdir", "/tmp/x")
    assert cp.returncode == 1 and "Operation not permitted" in cp.stderr, cp.stderr
    assert run(rl, "busybox", "mkdir", "/tmp/x").returncode == 0


def test_exec_is_filtered_too(rl: RootlessEnv, probes: Path) -> None:
    cid = rl("run", "-d", "--network", "none", "-v", f"{probes}:/t", "busybox", "sleep", "60",
             check=True).stdout.strip()
    try:
        cp = rl("exec", cid, "grep", "^Seccomp:", "/proc/self/status")
        assert " ".join(cp.stdout.split()) == "Seccomp: 2", cp.stderr
        assert rl("exec", cid, "/t/sysfs").returncode == EPERM
    finally:
        rl("rm", "-f", cid)


def test_init_pid_1_is_confined_as_the_command_is(rl: RootlessEnv, probes: Path) -> None:
    # Podman's catatonit runs under the container's settings: no process keeps namespace root's
    # full capability set or escapes the filter
    keys = "^(Seccomp|CapBnd|CapEff|Uid):"
    script = f"grep -E '{keys}' /proc/1/status; echo ==; grep -E '{keys}' /proc/self/status"
    for flags in ((), ("--user", "1000"), ("--security-opt", "no-new-privileges")):
        cp = run(rl, "--init", *flags, "busybox", "sh", "-c", script)
        assert cp.returncode == 0, cp.stderr
        pid1, own = (" ".join(part.split()) for part in cp.stdout.split("=="))
        assert "Seccomp: 2" in pid1 and pid1 == own, (flags, pid1, own)
    cp = run(rl, "--init", "--security-opt", "seccomp=unconfined", "busybox", "grep", "^Seccomp:", "/proc/1/status")
    assert " ".join(cp.stdout.split()) == "Seccomp: 0", cp.stderr
    # the command under the init is filtered as without it, and signals still reach it
    assert status_of(rl, probes, "sysfs", "--init") == EPERM
    cp = run(rl, "--init", "--user", "1000", "busybox", "sh", "-c", "kill -TERM $$; sleep 5")
    assert cp.returncode == 143, (cp.returncode, cp.stderr)
    # a PID 1 that is no longer namespace root is still joined by exec and read by top, and stops
    cid = rl("run", "-d", "--init", "--user", "1000", "--network", "none", "busybox", "sh", "-c",
             "sleep 60; echo woke early", check=True).stdout.strip()
    try:
        time.sleep(1.5)  # a detached init that held its caller's descriptors saw its command end at once
        assert json.loads(rl("inspect", cid).stdout)[0]["State"]["Status"] == "running", rl("logs", cid).stdout
        cp = rl("exec", cid, "sh", "-c", "id -u; grep ^Seccomp: /proc/self/status")
        assert cp.returncode == 0 and cp.stdout.split() == ["1000", "Seccomp:", "2"], (cp.stdout, cp.stderr)
        cp = rl("top", cid)
        assert cp.returncode == 0 and cp.stdout.splitlines()[1].split()[:2] == ["user", "1"], (cp.stdout, cp.stderr)
        assert rl("stop", "-t", "5", cid).returncode == 0
    finally:
        rl("rm", "-f", cid)


def test_a_confined_init_still_ends_with_its_run(rl: RootlessEnv) -> None:
    # changing its user cleared PID 1's parent-death signal: armed again, a run killed with
    # SIGKILL takes its --init container with it (the kernel ends the PID namespace with PID 1)
    import signal

    p = rl.popen("run", "--rm", "--init", "--user", "1000", "--network", "none", "busybox", "sh", "-c",
                 "echo ready; mkfifo /tmp/f && read x < /tmp/f")
    try:
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
        init = int(Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()[0])
        assert Path(f"/proc/{init}/comm").read_text().strip() == "rootless-init"
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=15)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{init}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not Path(f"/proc/{init}").exists(), "the container's init outlived its run"
    finally:
        if p.poll() is None:
            p.kill()


def test_build_steps_are_filtered_as_run_is(rl: RootlessEnv, probes: Path, tmp_path: Path) -> None:
    import shutil

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    shutil.copy(probes / "sysfs", ctx / "sysfs")
    (ctx / "Dockerfile").write_text(
        "FROM busybox\n"
        "COPY sysfs /probe/sysfs\n"
        "RUN grep ^Seccomp: /proc/self/status > /probe/self && grep ^Seccomp: /proc/1/status > /probe/pid1 && "
        "grep ^CapEff: /proc/self/status > /probe/caps && { /probe/sysfs; echo $? > /probe/status; }\n")
    cache = rl.store / "seccomp"
    for f in cache.iterdir() if cache.exists() else ():
        f.unlink()
    cp = rl("build", "-q", "-t", "localhost/seccomp-probe", str(ctx), timeout=240)
    assert cp.returncode == 0, cp.stderr
    try:
        # compiled once into the store's cache, as for `run`, which then finds it there
        built = sorted(cache.iterdir())
        assert len(built) == 1 and built[0].suffix == ".bpf", built
        out = run(rl, "--security-opt", "seccomp=unconfined", "localhost/seccomp-probe", "sh", "-c",
                  "cat /probe/self /probe/pid1 /probe/caps /probe/status")
        lines = [" ".join(ln.split()) for ln in out.stdout.splitlines()]
        caps = run(rl, "busybox", "grep", "^CapEff:", "/proc/self/status").stdout
        assert lines == ["Seccomp: 2", "Seccomp: 2", " ".join(caps.split()), str(EPERM)], out.stdout
        assert sorted(cache.iterdir()) == built
    finally:
        rl("rmi", "-f", "localhost/seccomp-probe")


def test_bad_profiles_are_one_line(rl: RootlessEnv, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "NOPE"}]}')
    assert_clean_error(run(rl, "--security-opt", f"seccomp={bad}", "busybox", "true"), 125,
                       str(bad), "syscalls[0].action")
    assert_clean_error(run(rl, "--security-opt", f"seccomp={tmp_path}/none.json", "busybox", "true"), 125,
                       "none.json", "no such file")
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["not_a_syscall", "mkdir"], "action": "SCMP_ACT_ERRNO"}]}))
    cp = run(rl, "--security-opt", f"seccomp={odd}", "busybox", "true")
    assert cp.returncode == 0, cp.stderr
    warnings = [ln for ln in cp.stderr.splitlines() if "not_a_syscall" in ln]
    assert len(warnings) == 1, cp.stderr


def test_info_reports_seccomp(rl: RootlessEnv) -> None:
    sec = json.loads(rl("info", "--format", "json", check=True).stdout)["host"]["security"]
    assert sec["seccompEnabled"] is True and sec["rootless"] is True
    assert sec["seccompProfilePath"].endswith("seccomp.json") and os.path.exists(sec["seccompProfilePath"])


def test_the_compiled_filter_is_cached_in_the_store(rl: RootlessEnv) -> None:
    run(rl, "busybox", "true")
    cache = rl.store / "seccomp"
    files = sorted(cache.iterdir())
    assert files and all(f.suffix == ".bpf" for f in files)
    before = {f: f.stat().st_mtime_ns for f in files}
    run(rl, "busybox", "true")
    assert {f: f.stat().st_mtime_ns for f in sorted(cache.iterdir())} == before


# --------------------------------------------------------------------------- limits and sysctls


def test_rlimits_are_raised_as_rootless_podman_does(rl: RootlessEnv) -> None:
    nofile_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc_hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    cp = run(rl, "busybox", "sh", "-c", "ulimit -Sn; ulimit -Hn; ulimit -Su; ulimit -Hu")
    got = [int(x) for x in cp.stdout.split()]
    want_n = min(1048576, nofile_hard if nofile_hard >= 0 else 1048576)
    want_u = min(1048576, nproc_hard if nproc_hard >= 0 else 1048576, pid_max)
    assert got == [want_n, want_n, want_u, want_u]


def test_ulimit_flag_host_and_config(rl: RootlessEnv) -> None:
    cp = run(rl, "--ulimit", "nofile=512:1024", "busybox", "sh", "-c", "ulimit -Sn; ulimit -Hn")
    assert cp.stdout.split() == ["512", "1024"], cp.stderr
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    cp = run(rl, "--ulimit", "host", "busybox", "sh", "-c", "ulimit -Sn; ulimit -Hn")
    assert cp.stdout.split() == [str(soft), str(hard)]
    old = rl.config_text
    rl.write_config(old + '\n[containers]\ndefault-ulimits = ["nofile=300:400", "core=0:0"]\n')
    try:
        cp = run(rl, "busybox", "sh", "-c", "ulimit -Sn; ulimit -Hn")
        assert cp.stdout.split() == ["300", "400"], cp.stderr
        cp = run(rl, "--ulimit", "nofile=100", "busybox", "sh", "-c", "ulimit -Sn; ulimit -Hn")
        assert cp.stdout.split() == ["100", "100"], cp.stderr
    finally:
        rl.write_config(old)


def test_ulimit_above_the_hard_limit_is_one_line(rl: RootlessEnv) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard < 0:
        pytest.skip("the test user has no hard NOFILE limit")
    line = assert_clean_error(run(rl, "--ulimit", f"nofile={hard + 1}", "busybox", "true"), 125,
                              "RLIMIT_NOFILE", str(hard))
    assert "ulimit" in line
    assert_clean_error(run(rl, "--ulimit", "bogus=1", "busybox", "true"), 125, "bogus")


def test_ping_group_range_and_sysctls(rl: RootlessEnv) -> None:
    cp = run(rl, "busybox", "cat", "/proc/sys/net/ipv4/ping_group_range")
    assert cp.stdout.split() == ["0", "0"], cp.stderr
    cp = run(rl, "--sysctl", "net.ipv4.ip_unprivileged_port_start=80", "--sysctl", "kernel.shmmni=1000",
             "--sysctl", "fs.mqueue.msg_max=20", "busybox", "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start",
             "/proc/sys/kernel/shmmni", "/proc/sys/fs/mqueue/msg_max")
    assert cp.stdout.split() == ["80", "1000", "20"], cp.stderr
    assert_clean_error(run(rl, "--sysctl", "kernel.pid_max=100", "busybox", "true"), 125,
                       "kernel.pid_max", "not a namespaced sysctl")
    assert_clean_error(rl("run", "--rm", "--network", "host", "--sysctl", "net.ipv4.ip_forward=1", "busybox",
                          "true"), 125, "net.ipv4.ip_forward")


# --------------------------------------------------------------------------- beside Podman


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory, rl: RootlessEnv) -> Iterator[PodmanEnv]:
    """Rootless Podman configured as /work/shared/PEERS.md says (runc, cgroupfs, file events,
    overlay), with the test busybox image imported from the same files."""
    import shutil

    need(shutil.which("podman") is not None and shutil.which("runc") is not None,
         "podman and runc are not installed (scripts/setup-host installs them)")
    env = PodmanEnv(tmp_path_factory.mktemp("podman"))
    try:
        env.import_busybox(rl)
        yield env
    finally:
        env.stop()


class PodmanEnv:
    def __init__(self, base: Path) -> None:
        self.base = base
        conf = base / "config" / "containers"
        conf.mkdir(parents=True)
        (conf / "containers.conf").write_text(
            '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n')
        (conf / "storage.conf").write_text('[storage]\ndriver = "overlay"\n')
        self.run_dir = Path(f"/tmp/rlcp-{os.getuid()}-{os.getpid()}")
        self.run_dir.mkdir(mode=0o700, exist_ok=True)
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(base), "LANG": "C.UTF-8",
                    "XDG_CONFIG_HOME": str(base / "config"), "XDG_DATA_HOME": str(base / "data"),
                    "XDG_RUNTIME_DIR": str(self.run_dir)}

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cp = subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True, timeout=120,
                            cwd=self.base)
        if check and cp.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: exit {cp.returncode}\n{cp.stderr}")
        return cp

    def import_busybox(self, rl: RootlessEnv) -> None:
        tar = self.base / "busybox.tar"
        _tar_rootfs(tar)
        self("import", str(tar), "localhost/rltest-busybox:latest")

    def stop(self) -> None:
        import shutil

        with open(os.devnull, "w") as null:
            subprocess.run(["podman", "unshare", "rm", "-rf", str(self.base / "data")], env=self.env,
                           stdout=null, stderr=null, timeout=120)
        pid_file = self.run_dir / "libpod" / "tmp" / "pause.pid"
        try:
            os.kill(int(pid_file.read_text()), 9)
        except (OSError, ValueError):
            pass
        shutil.rmtree(self.run_dir, ignore_errors=True)


def _tar_rootfs(tar: Path) -> None:
    """The test busybox image's one layer (tests/testimages.py), for `podman import`."""
    from tests import testimages as ti

    tar.write_bytes(ti.busybox_layer().read())


PROBE = ("grep ^Seccomp: /proc/self/status; ulimit -Sn; ulimit -Hn; ulimit -Su; ulimit -Hu; "
         "cat /proc/sys/net/ipv4/ping_group_range; ls /dev | grep -c '^core$'")


def test_probes_equal_podmans(rl: RootlessEnv, podman: PodmanEnv) -> None:
    ours = run(rl, "busybox", "sh", "-c", PROBE)
    theirs = podman("run", "--rm", "--network", "none", "localhost/rltest-busybox", "sh", "-c", PROBE, check=False)
    assert theirs.returncode in (0, 1), theirs.stderr  # grep -c of nothing exits 1
    assert ours.stdout.split() == theirs.stdout.split(), (ours.stdout, theirs.stdout)


def test_denied_syscalls_equal_podmans(rl: RootlessEnv, podman: PodmanEnv, probes: Path) -> None:
    for probe in ("sysfs", "personality", "setns", "mkdir"):
        theirs = podman("run", "--rm", "--network", "none", "-v", f"{probes}:/t", "localhost/rltest-busybox",
                        f"/t/{probe}", check=False).returncode
        assert status_of(rl, probes, probe) == theirs, probe


# --------------------------------------------------------------------------- names and /etc


NAME_RE = r"[a-z]+_[a-z]+"


def etc_files(out: str) -> dict[str, str]:
    parts = out.split("=====\n")
    return {"hostname": parts[0].strip(), "hosts": parts[1], "resolv": parts[2] if len(parts) > 2 else ""}


ETC = "hostname; echo =====; cat /etc/hosts; echo =====; cat /etc/resolv.conf 2>/dev/null || echo NO-FILE"


def normalised(files: dict[str, str]) -> list[str]:
    """/etc/hosts with the container's own host name (its short ID) and generated name as placeholders."""
    import re

    host = files["hostname"]
    text = files["hosts"].replace(host, "HOSTNAME")
    return [re.sub(rf"\b{NAME_RE}$", "NAME", ln) for ln in text.splitlines()]


def test_an_anonymous_run_rm_has_a_generated_name(rl: RootlessEnv) -> None:
    import re

    cp = rl("run", "--rm", "busybox", "sh", "-c", ETC)
    files = etc_files(cp.stdout)
    own = files["hosts"].splitlines()[-1].split()
    assert own[0] == "10.0.2.100" and own[1] == files["hostname"] and re.fullmatch(NAME_RE, own[2]), own
    cp = rl("run", "--rm", "busybox", "cat", "/run/.containerenv")
    assert re.search(rf'^name="{NAME_RE}"$', cp.stdout, re.M), cp.stdout


@pytest.mark.parametrize("flags", [(), ("--network", "none"), ("--network", "host"), ("--dns", "none"),
                                   ("--network", "slirp4netns:allow_host_loopback=true"),
                                   ("--dns", "10.9.9.9", "--dns-search", "example.test")])
def test_etc_files_equal_podmans(rl: RootlessEnv, podman: PodmanEnv, flags: tuple[str, ...]) -> None:
    ours = etc_files(rl("run", "--rm", *flags, "busybox", "sh", "-c", ETC).stdout)
    theirs = etc_files(podman("run", "--rm", *flags, "localhost/rltest-busybox", "sh", "-c", ETC).stdout)
    assert ours["resolv"] == theirs["resolv"]
    mine, podmans = normalised(ours), normalised(theirs)
    if "allow_host_loopback=true" in " ".join(flags):
        # ours names the host's loopback (reachable through slirp4netns then), Podman's its address
        mine = [ln for ln in mine if "host.containers.internal" not in ln]
        podmans = [ln for ln in podmans if "host.containers.internal" not in ln]
    assert mine == podmans


# --------------------------------------------------------------------------- layers


def test_a_layer_with_absolute_member_names_pulls(rl: RootlessEnv, registry: Registry) -> None:
    """What `tar -P` writes (/etc/x): stored relative to the layer's root, as Docker does."""
    from tests import imagebuild as ib
    from tests import testimages as ti

    top = ib.build_layer([ib.directory("/srv"), ib.file("/srv/absolute.txt", "from /srv\n"),
                          ib.file("/etc/motd", "absolute motd\n")])
    with registry.pusher() as p:
        ti.push_image(p, "test/absolute", "latest", ib.make_image([ti.busybox_layer(), top], cmd=["sh"]))
    rl("pull", "-q", f"{registry.host}/test/absolute:latest", check=True)
    cp = rl("run", "--rm", "--network", "none", f"{registry.host}/test/absolute:latest", "cat", "/srv/absolute.txt",
            "/etc/motd", check=True)
    assert cp.stdout == "from /srv\nabsolute motd\n"


# --------------------------------------------------------------------------- other differences


def test_keep_id_adds_the_users_entries_as_podman_does(rl: RootlessEnv, podman: PodmanEnv) -> None:
    probe = "id; tail -1 /etc/passwd; tail -1 /etc/group"
    ours = rl("run", "--rm", "--network", "none", "--userns", "keep-id", "busybox", "sh", "-c", probe, check=True)
    import pwd

    me = pwd.getpwuid(os.getuid()).pw_name
    assert f"uid={os.getuid()}({me})" in ours.stdout
    assert ours.stdout.splitlines()[1] == f"{me}:*:{os.getuid()}:{os.getgid()}::/:/bin/sh"
    theirs = podman("run", "--rm", "--network", "none", "--userns", "keep-id", "localhost/rltest-busybox", "sh",
                    "-c", probe)
    assert ours.stdout.splitlines()[1:] == theirs.stdout.splitlines()[1:]


def test_cp_into_a_stopped_container_holds_its_lock(rl: RootlessEnv, tmp_path: Path) -> None:
    import fcntl
    import time

    cid = rl("create", "--network", "none", "busybox", "cat", "/payload", check=True).stdout.strip()
    src = tmp_path / "payload"
    src.write_text("copied\n")
    try:
        fd = os.open(rl.store / "containers" / cid / "config.json", os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            proc = rl.popen("cp", str(src), f"{cid}:/payload")
            time.sleep(1.5)
            assert proc.poll() is None, "cp went ahead while another command held the container's lock"
        finally:
            os.close(fd)
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
        cp = rl("start", "-a", cid)
        assert cp.returncode == 0 and cp.stdout == "copied\n", cp.stderr
    finally:
        rl("rm", "-f", cid)


def test_publish_on_an_ipv6_host_address(rl: RootlessEnv) -> None:
    import socket
    import time

    if not Path("/proc/net/if_inet6").exists() or "00000000000000000000000000000001" not in \
            Path("/proc/net/if_inet6").read_text():
        pytest.skip("the host's loopback has no ::1")
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.bind(("::1", 0))
        port = s.getsockname()[1]
    cid = rl("run", "-d", "-p", f"[::1]:{port}:80", "busybox", "sh", "-c",
             "echo hello-v6 > /tmp/index.html && exec httpd -f -p 80 -h /tmp", check=True).stdout.strip()
    try:
        assert rl("port", cid).stdout.strip() == f"80/tcp -> [::1]:{port}"
        deadline = time.monotonic() + 15
        body = b""
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("::1", port), timeout=3) as c:
                    c.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
                    body = b"".join(iter(lambda: c.recv(4096), b""))
                if b"hello-v6" in body:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        assert b"hello-v6" in body, body
    finally:
        rl("rm", "-f", cid)


def test_publish_udp_on_an_ipv6_host_address(rl: RootlessEnv) -> None:
    import socket

    if not Path("/proc/net/if_inet6").exists() or "00000000000000000000000000000001" not in \
            Path("/proc/net/if_inet6").read_text():
        pytest.skip("the host's loopback has no ::1")
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(("::1", 0))
        port = s.getsockname()[1]
    # the host's python3 as a UDP echo server on the container's IPv4 side, answering each sender
    echo = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 5353))\n"
            "while True:\n    d, a = s.recvfrom(2048); s.sendto(b'got:' + d, a)")
    cid = rl("run", "-d", "-p", f"[::1]:{port}:5353/udp", "-v", "/usr:/usr:ro", "-v", "/usr/lib:/lib:ro",
             "-v", "/usr/lib64:/lib64:ro", "busybox", "/usr/bin/python3", "-c", echo, check=True).stdout.strip()
    try:
        assert rl("port", cid).stdout.strip() == f"5353/udp -> [::1]:{port}"
        replies = []
        for name in ("one", "two"):
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as c:
                c.settimeout(0.5)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    c.sendto(f"{name}\n".encode(), ("::1", port))
                    try:
                        data, src = c.recvfrom(100)
                    except TimeoutError:
                        continue
                    replies.append((data, src[:2]))
                    break
        assert replies == [(b"got:one\n", ("::1", port)), (b"got:two\n", ("::1", port))], replies
    finally:
        rl("rm", "-f", cid)


def test_start_attach_passes_stdin_to_an_interactive_container(rl: RootlessEnv) -> None:
    cid = rl("create", "-i", "--network", "none", "busybox", "sh", "-c", "read line; echo got:$line",
             check=True).stdout.strip()
    try:
        cp = rl("start", "-a", cid, input="hello\n")
        assert cp.returncode == 0 and cp.stdout == "got:hello\n", cp.stderr
    finally:
        rl("rm", "-f", cid)


def test_start_attach_a_terminal_passes_keys_and_size(rl: RootlessEnv) -> None:
    import shutil

    from tests.integration.harness import Tty

    need(bool(shutil.which("tmux")), "tmux is not installed")
    cid = rl("create", "-it", "--network", "none", "busybox", "sh", check=True).stdout.strip()
    tty = Tty(rl, [*rl.command, "start", "-a", cid], width=120, height=33)
    try:
        tty.wait_for("/ #")
        tty.type_line("tty; stty size; echo mark-$((6*7))")
        screen = tty.wait_for("mark-42")
        assert "/dev/pts/0" in screen and "33 120" in screen, screen
        # a new size of our terminal reaches the container's (SIGWINCH → TIOCSWINSZ on the pty)
        subprocess.run(["tmux", "-S", tty.sock, "resize-window", "-x", "100", "-y", "30"], check=True, timeout=20)
        time.sleep(0.5)
        tty.type_line("stty size; echo mark-$((7*7))")
        screen = tty.wait_for("mark-49")
        assert "30 100" in screen, screen
        # raw mode: Ctrl-C reaches the container's shell as a key, not our CLI as a signal
        tty.type_line("sleep 30")
        time.sleep(0.5)
        tty.send("C-c")
        tty.type_line("echo after-$((1+1))")
        tty.wait_for("after-2")
        tty.type_line("exit 3")
        assert tty.wait_exit() == 3
        assert "Traceback" not in tty.screen()
    finally:
        tty.close()
        rl("rm", "-f", cid)
    # the session is in the log as under `run -t`
    cid = rl("create", "-t", "-i", "--network", "none", "busybox", "sh", check=True).stdout.strip()
    try:
        cp = rl("start", "-a", cid, input="echo piped-$((2*3))\nexit 4\n")
        assert cp.returncode == 4 and "piped-6" in cp.stdout, (cp.returncode, cp.stdout, cp.stderr)
        assert "piped-6" in rl("logs", cid).stdout
    finally:
        rl("rm", "-f", cid)


def test_keep_id_shows_the_images_root_as_root(rl: RootlessEnv, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.write_text("yours\n")
    cp = rl("run", "--rm", "--network", "none", "--userns", "keep-id", "-v", f"{tmp_path}:/host", "busybox", "sh",
            "-c", "stat -c '%u:%g %n' /bin/busybox /etc/passwd /home/user /host/mine; id -u; "
            "echo new > /tmp/made && stat -c %u /tmp/made", check=True)
    lines = cp.stdout.splitlines()
    me = f"{os.getuid()}:{os.getgid()}"
    # as under Podman: the image's owners as the image gives them, your own files as yours
    assert lines[:4] == ["0:0 /bin/busybox", "0:0 /etc/passwd", "1000:1000 /home/user", f"{me} /host/mine"]
    assert lines[4] == str(os.getuid()) and lines[5] == str(os.getuid())


def test_keep_id_refuses_a_rootfs_it_cannot_remap(rl: RootlessEnv) -> None:
    # vfs has no ID-mapping layer to read the image through: the image's root would show as you,
    # so the run is refused (not silently made so), and nothing is left behind
    def containers() -> set[str]:
        d = rl.store / "containers"
        return set(os.listdir(d)) if d.exists() else set()

    before = containers()
    for verb in ("run", "create"):
        assert_clean_error(rl(verb, "--storage-driver", "vfs", "--userns", "keep-id", "--network", "none",
                              "--name", f"keep-id-vfs-{verb}", "busybox", "true"), 125, "keep-id", "vfs")
        assert containers() == before
        assert rl("container", "exists", f"keep-id-vfs-{verb}").returncode == 1


def test_create_checks_a_profile_before_recording(rl: RootlessEnv, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": "read"}]}')
    before = set(os.listdir(rl.store / "containers")) if (rl.store / "containers").exists() else set()
    assert_clean_error(rl("create", "--security-opt", f"seccomp={bad}", "busybox", "true"), 125,
                       "syscalls[0].names")
    after = set(os.listdir(rl.store / "containers")) if (rl.store / "containers").exists() else set()
    assert after == before
