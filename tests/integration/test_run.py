"""`rootless run` as the unprivileged user: exit codes, process, mounts, signals, terminal.

Reference behaviour is rootless Podman 4 (runc); each test names what it pins down.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.conftest import TestImages, need
from tests.integration.harness import RootlessEnv, assert_clean_error

pytestmark = pytest.mark.integration

BUSYBOX = "busybox"


@pytest.fixture(scope="module")
def rl(rl_shared: RootlessEnv, images: TestImages) -> RootlessEnv:
    """One store for the module, busybox pulled once."""
    images.require("library/busybox:latest")
    rl_shared("pull", "-q", BUSYBOX, check=True)
    return rl_shared


def run(rl: RootlessEnv, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return rl("run", "--rm", *args, **kw)  # type: ignore[arg-type]


def out(rl: RootlessEnv, *args: str, **kw: object) -> str:
    cp = run(rl, *args, **kw)
    assert cp.returncode == 0, f"exit {cp.returncode}\n--- stdout\n{cp.stdout}\n--- stderr\n{cp.stderr}"
    return cp.stdout


def containers(rl: RootlessEnv) -> list[str]:
    d = rl.store / "containers"
    return sorted(os.listdir(d)) if d.is_dir() else []


# --------------------------------------------------------------------------- exit codes


@pytest.mark.parametrize(("argv", "code"), [
    (("true",), 0),
    (("false",), 1),
    (("sh", "-c", "exit 42"), 42),
    # As PID 1 the shell has no handler for SIGTERM, so the kernel drops it (pid_namespaces(7)):
    # Podman gives 0 too.
    (("sh", "-c", "kill -TERM $$; exit 0"), 0),
    (("--init", "sh", "-c", "kill -TERM $$; exit 0"), 143),
    (("--init", "sh", "-c", "kill -KILL $$"), 137),
    (("sh", "-c", "sleep 10 & kill -TERM $!; wait $!"), 143),
])
def test_exit_codes(rl: RootlessEnv, argv: tuple[str, ...], code: int) -> None:
    cp = run(rl, *(a for a in argv if a == "--init"), BUSYBOX, *(a for a in argv if a != "--init"))
    assert cp.returncode == code, cp.stderr


def test_command_not_found_is_127(rl: RootlessEnv) -> None:
    before = containers(rl)
    cp = run(rl, BUSYBOX, "no-such-command")
    line = assert_clean_error(cp, 127)
    assert line == 'Error: exec: "no-such-command": executable file not found in $PATH'
    cp = run(rl, BUSYBOX, "/no/such")
    assert_clean_error(cp, 127, "no such file or directory")
    assert containers(rl) == before


def test_not_executable_is_126(rl: RootlessEnv) -> None:
    assert_clean_error(run(rl, BUSYBOX, "/tmp"), 126, "permission denied")
    assert_clean_error(run(rl, BUSYBOX, "/etc/passwd"), 126, "permission denied")


def test_unknown_image_is_125(rl: RootlessEnv) -> None:
    assert_clean_error(run(rl, "test/no-such-image"), 125)
    assert_clean_error(run(rl, "--pull", "never", "test/no-such-image"), 125, "not known")


# --------------------------------------------------------------------------- process


def test_inspect_image_defaults(rl: RootlessEnv, images: TestImages) -> None:
    """test/inspect: Entrypoint [sh -c], Cmd [echo hi], User 1000:1000, WorkingDir /var/www."""
    images.require("test/inspect:latest")
    assert out(rl, "test/inspect") == "hi\n"
    text = out(rl, "test/inspect", 'id; pwd; echo "$GREETING|$HOME|$PATH|$TERM|$container|$HOSTNAME"')
    ident, cwd, env = text.splitlines()
    assert ident.startswith("uid=1000(user) gid=1000(user)")
    assert cwd == "/var/www"
    greeting, home, path, term, container, hostname = env.split("|")
    assert (greeting, home, path, term, container) == ("hello world", "/home/user", "/usr/bin:/bin", "xterm",
                                                       "rootless")
    assert len(hostname) == 12
    # --entrypoint "" leaves just the command; -u and -w override the image
    text = out(rl, "--entrypoint", "", "-u", "root", "-w", "/tmp", "test/inspect", "sh", "-c", "id -u; pwd")
    assert text == "0\n/tmp\n"


def test_user_and_groups_resolved_in_the_container(rl: RootlessEnv) -> None:
    # what `podman run` prints for each (busybox's id)
    assert out(rl, "-u", "user", BUSYBOX, "id") == "uid=1000(user) gid=1000(user) groups=1000(user)\n"
    assert out(rl, "-u", "nobody:user", BUSYBOX, "id") == "uid=65534(nobody) gid=1000(user) groups=1000(user)\n"
    assert out(rl, "-u", "4242", BUSYBOX, "sh", "-c", "id; echo $HOME") == \
        "uid=4242(4242) gid=0(root) groups=0(root)\n/\n"
    assert out(rl, BUSYBOX, "sh", "-c", "id; echo $HOME") == "uid=0(root) gid=0(root)\n/root\n"
    # ids the image does not list get entries, as Podman adds them
    assert out(rl, "-u", "user:77", BUSYBOX, "sh", "-c", "id; tail -1 /etc/group") == \
        "uid=1000(user) gid=77(77) groups=77(77)\n77:x:77:user\n"
    assert out(rl, "-u", "4242", BUSYBOX, "tail", "-1", "/etc/passwd") == "4242:*:4242:0:container user:/:/bin/sh\n"
    caps = dict(line.split(":\t") for line in out(rl, "-u", "1000", "--cap-add", "NET_ADMIN", BUSYBOX, "grep",
                                                  "^Cap", "/proc/self/status").splitlines())
    assert caps == {"CapInh": "0000000000001000", "CapPrm": "0000000000001000", "CapEff": "0000000000001000",
                    "CapBnd": "00000000800415fb", "CapAmb": "0000000000001000"}
    cp = run(rl, "-u", "nosuchuser", BUSYBOX, "id")
    assert_clean_error(cp, 125, "unable to find user nosuchuser")


def test_env_flags(rl: RootlessEnv, tmp_path: Path) -> None:
    f = tmp_path / "env"
    f.write_text("# c\nFROM_FILE=file\nBOTH=file\n")
    text = out(rl, "-e", "A=1", "-e", "BOTH=flag", "-e", "SHELL", "--env-file", str(f), "-e", "HOME=/x",
               BUSYBOX, "sh", "-c", "echo $A $BOTH $FROM_FILE $SHELL $HOME")
    assert text == "1 flag file /bin/sh /x\n"  # SHELL comes from the host (the harness sets /bin/sh)


def test_stdin_only_with_i(rl: RootlessEnv) -> None:
    assert run(rl, "-i", BUSYBOX, "cat", input="hello\n").stdout == "hello\n"
    assert run(rl, BUSYBOX, "cat", input="hello\n").stdout == ""


def test_hostname(rl: RootlessEnv) -> None:
    text = out(rl, "--hostname", "box", "--name", "web", BUSYBOX, "sh", "-c",
               "hostname; cat /etc/hostname; grep box /etc/hosts")
    lines = text.splitlines()
    assert lines[:2] == ["box", "box"] and "web" in lines[2]
    default = out(rl, BUSYBOX, "hostname").strip()
    assert len(default) == 12 and all(c in "0123456789abcdef" for c in default)


def test_capabilities_are_podmans_default(rl: RootlessEnv) -> None:
    status = out(rl, BUSYBOX, "grep", "^Cap", "/proc/self/status")
    caps = dict(line.split(":\t") for line in status.splitlines())
    assert caps["CapEff"] == caps["CapPrm"] == caps["CapBnd"] == "00000000800405fb"
    assert caps["CapInh"] == caps["CapAmb"] == "0000000000000000"
    # a non-root user has none effective; the bounding set stays
    caps = dict(line.split(":\t") for line in out(rl, "-u", "1000", BUSYBOX, "grep", "^Cap",
                                                  "/proc/self/status").splitlines())
    assert caps["CapEff"] == "0000000000000000" and caps["CapBnd"] == "00000000800405fb"
    # --cap-drop ALL --cap-add NET_ADMIN (bit 12)
    eff = out(rl, "--cap-drop", "ALL", "--cap-add", "net_admin", BUSYBOX, "grep", "CapEff", "/proc/self/status")
    assert eff.split()[1] == f"{1 << 12:016x}"
    # a dropped CAP_CHOWN really is gone
    assert run(rl, "--cap-drop", "CHOWN", BUSYBOX, "chown", "1000", "/etc/passwd").returncode == 1
    assert run(rl, BUSYBOX, "chown", "1000", "/etc/passwd").returncode == 0


def test_no_new_privileges(rl: RootlessEnv) -> None:
    assert out(rl, BUSYBOX, "grep", "NoNewPrivs", "/proc/self/status").split()[1] == "0"
    assert out(rl, "--security-opt", "no-new-privileges", BUSYBOX, "grep", "NoNewPrivs",
               "/proc/self/status").split()[1] == "1"


# --------------------------------------------------------------------------- ids and files


def test_uid_map_and_owners_match_the_image(rl: RootlessEnv, subid_start: int) -> None:
    text = out(rl, BUSYBOX, "sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; "
               "stat -c '%u:%g %a %n' /home/user /etc/passwd /etc/shadow /tmp /bin/busybox")
    rows = [line.split() for line in text.splitlines()]
    assert rows[0] == ["0", str(os.getuid()), "1"] and rows[1] == ["1", str(subid_start), "65536"]
    assert rows[2] == ["0", str(os.getgid()), "1"] and rows[3] == ["1", str(subid_start), "65536"]
    owners = {r[-1]: (r[0], r[1]) for r in rows[4:]}
    assert owners == {"/home/user": ("1000:1000", "755"), "/etc/passwd": ("0:0", "644"),
                      "/etc/shadow": ("0:0", "600"), "/tmp": ("0:0", "1777"),
                      "/bin/busybox": ("0:0", "755")}


def test_keep_id(rl: RootlessEnv) -> None:
    text = out(rl, "--userns", "keep-id", BUSYBOX, "sh", "-c", "id -u; id -g; cat /proc/self/uid_map")
    lines = text.splitlines()
    assert lines[:2] == [str(os.getuid()), str(os.getgid())]
    assert [str(os.getuid()), str(os.getuid()), "1"] in [line.split() for line in lines[2:]]


def test_volumes_rw_and_ro(rl: RootlessEnv, tmp_path: Path) -> None:
    d = tmp_path / "vol"
    d.mkdir()
    (d / "in").write_text("from host\n")
    text = out(rl, "-v", f"{d}:/data", BUSYBOX, "sh", "-c", "cat /data/in; echo out > /data/out")
    assert text == "from host\n"
    st = (d / "out").stat()
    assert (d / "out").read_text() == "out\n" and st.st_uid == os.getuid()  # container root is you
    cp = run(rl, "-v", f"{d}:/data:ro", BUSYBOX, "sh", "-c", "cat /data/in; echo x > /data/x")
    assert cp.returncode != 0 and "Read-only file system" in cp.stderr and cp.stdout == "from host\n"
    assert not (d / "x").exists()
    cp = run(rl, "--mount", f"type=bind,source={d},target=/m,readonly", BUSYBOX, "touch", "/m/y")
    assert cp.returncode != 0 and not (d / "y").exists()
    assert out(rl, "--tmpfs", "/scratch", BUSYBOX, "sh", "-c", "touch /scratch/a && grep /scratch /proc/mounts") \
        .split()[2] == "tmpfs"
    assert_clean_error(run(rl, "-v", "/no/such/dir:/x", BUSYBOX, "true"), 125, "no such file")


def test_read_only_rootfs(rl: RootlessEnv) -> None:
    cp = run(rl, "--read-only", BUSYBOX, "sh", "-c", "touch /tmp/ok /run/ok /var/tmp/ok && touch /etc/x")
    assert cp.returncode == 1 and "Read-only file system" in cp.stderr
    assert run(rl, BUSYBOX, "touch", "/etc/x").returncode == 0


def test_masked_and_readonly_paths(rl: RootlessEnv) -> None:
    text = out(rl, BUSYBOX, "sh", "-c", "wc -c < /proc/timer_list; ls /sys/firmware | wc -l; "
               "grep -E ' /proc/(sys|sysrq-trigger|irq|bus) ' /proc/mounts | cut -d' ' -f2,4; "
               "echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null && echo wrote || echo refused")
    lines = text.splitlines()
    assert lines[0].strip() == "0" and lines[1].strip() == "0"
    ro = dict(line.split() for line in lines[2:-1])
    # every one of Podman's read-only paths this kernel has
    assert set(ro) == {p for p in ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus")
                       if os.path.exists(p)}
    assert all(v.startswith("ro,") for v in ro.values())
    assert lines[-1] == "refused"
    mounts = out(rl, "--privileged", BUSYBOX, "cat", "/proc/mounts")
    assert "/proc/timer_list" not in mounts and " /proc/sys " not in mounts


def test_privileged_passes_the_hosts_devices(rl: RootlessEnv) -> None:
    """As rootless Podman: --privileged binds the host's device nodes you may open; they work."""
    from rootless.image.specgen import host_devices

    devs = host_devices()
    need(bool(devs), "no host device beyond the default ones is open to this user")
    want = "/dev/net/tun" if "/dev/net/tun" in devs else devs[0]
    script = f"test -c {want} && echo char; ls /dev/pts/ptmx; test -e /dev/console || echo no-console"
    assert out(rl, "--privileged", BUSYBOX, "sh", "-c", script).split() == ["char", "/dev/pts/ptmx", "no-console"]
    assert run(rl, BUSYBOX, "test", "-e", want).returncode == 1
    if want == "/dev/net/tun":  # a working node: the tun driver answers (EBADFD: no interface attached yet)
        cp = run(rl, "--privileged", BUSYBOX, "sh", "-c", "cat /dev/net/tun")
        assert "File descriptor in bad state" in cp.stderr, cp.stderr


def test_dev_and_proc(rl: RootlessEnv) -> None:
    text = out(rl, BUSYBOX, "sh", "-c", "ls /dev; echo; ps -o pid,comm; readlink /dev/ptmx; "
               "grep -c . /dev/null; head -c 4 /dev/zero | wc -c")
    devs, rest = text.split("\n\n", 1)
    assert set(devs.split()) >= {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue",
                                 "ptmx", "fd", "stdin", "stdout", "stderr"}
    ps = rest.splitlines()
    assert ps[1].split() == ["1", "sh"]  # the command is PID 1 of its own PID namespace
    assert "pts/ptmx" in rest and rest.rstrip().endswith("4")


def test_network_none_has_loopback_only(rl: RootlessEnv) -> None:
    text = out(rl, "--network", "none", BUSYBOX, "sh", "-c", "ls /sys/class/net; cat /sys/class/net/lo/operstate")
    assert text.split()[0] == "lo" and len(text.split()) == 2


def test_init_reaps_orphans(rl: RootlessEnv) -> None:
    text = out(rl, "--init", BUSYBOX, "sh", "-c", "sh -c 'sleep 0.2 & exit 0'; sleep 1; ps -o pid,stat,comm")
    rows = [line.split() for line in text.splitlines()[1:]]
    assert rows[0][0] == "1" and rows[0][2] == "rootless-init" and rows[1][0] == "2"
    assert not [r for r in rows if r[1].startswith("Z")], text


def test_stored_image_run_imports_no_network_stack(rl: RootlessEnv) -> None:
    cp = rl("run", "--rm", BUSYBOX, "true", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert cp.returncode == 0, cp.stderr
    names = {line.rsplit("|", 1)[-1].strip() for line in cp.stderr.splitlines() if line.startswith("import time:")}
    assert "rootless.runtime.run" in names
    assert not names & {"httpx", "rich", "pydantic", "rootless.image.registry"}, names


# --------------------------------------------------------------------------- signals


def _wait_for(proc: subprocess.Popen[str], needle: str, timeout: float = 15) -> str:
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
        if needle in line:
            return seen
    raise AssertionError(f"{needle!r} not printed; got {seen!r}")


def test_sigterm_to_rootless_reaches_the_container(rl: RootlessEnv) -> None:
    p = rl.popen("run", "--rm", BUSYBOX, "sh", "-c",
                 "trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.1; done")
    _wait_for(p, "ready")
    p.send_signal(signal.SIGTERM)
    out_, err = p.communicate(timeout=15)
    assert p.returncode == 7 and out_ == "got TERM\n", err
    assert rl.wait_no_processes() == []


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130),
                                           (signal.SIGUSR1, 138)])
def test_signal_kills_the_command_under_init(rl: RootlessEnv, sig: int, code: int) -> None:
    before = containers(rl)
    p = rl.popen("run", "--rm", "--init", BUSYBOX, "sh", "-c", "echo ready; exec sleep 100")
    _wait_for(p, "ready")
    p.send_signal(sig)
    try:
        p.communicate(timeout=15)
    finally:
        p.kill()
    assert p.returncode == code
    assert containers(rl) == before


def test_sigkill_of_the_container_is_137(rl: RootlessEnv) -> None:
    p = rl.popen("run", "--rm", BUSYBOX, "sh", "-c", "echo ready; sleep 100")
    _wait_for(p, "ready")
    kids = [k for k in Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
            if Path(f"/proc/{k}/comm").read_text().strip() != "slirp4netns"]  # the network's helper
    assert len(kids) == 1, kids  # the container's PID 1 is our direct child
    os.kill(int(kids[0]), signal.SIGKILL)
    p.communicate(timeout=15)
    assert p.returncode == 137


# --------------------------------------------------------------------------- store


def test_rm_leaves_nothing_and_concurrent_runs(rl: RootlessEnv) -> None:
    before = containers(rl)
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda i: run(rl, BUSYBOX, "sh", "-c", f"echo {i} > /tmp/f; cat /tmp/f"),
                                range(10)))
    assert [r.returncode for r in results] == [0] * 10, [r.stderr for r in results]
    assert sorted(r.stdout for r in results) == sorted(f"{i}\n" for i in range(10))
    assert containers(rl) == before
    assert rl.wait_no_processes() == []


def test_without_rm_the_layer_stays(rl: RootlessEnv) -> None:
    before = set(containers(rl))
    assert rl("run", BUSYBOX, "touch", "/made-here").returncode == 0
    new = set(containers(rl)) - before
    assert len(new) == 1
    cid = new.pop()
    upper = rl.store / "containers" / cid / "upper"
    if upper.is_dir():  # overlay drivers keep the container's changes there
        assert (upper / "made-here").exists()
    rl("unshare", "rm", "-rf", str(rl.store / "containers" / cid), check=True)


@pytest.mark.parametrize("driver", ["overlay", "fuse-overlayfs", "vfs"])
def test_every_storage_driver_runs(rl: RootlessEnv, driver: str) -> None:
    before = containers(rl)
    if driver == "fuse-overlayfs":
        need(shutil.which("fuse-overlayfs") is not None and os.access("/dev/fuse", os.R_OK | os.W_OK),
             "fuse-overlayfs or /dev/fuse is missing")
    text = out(rl, "--storage-driver", driver, BUSYBOX, "sh", "-c",
               "echo x > /etc/new && rm /etc/hostname.x 2>/dev/null; cat /etc/new; stat -c %u:%g /home/user; "
               "awk '$2 == \"/\" {print $3}' /proc/mounts")
    lines = text.split()
    assert lines[:2] == ["x", "1000:1000"]
    assert lines[2] == {"overlay": "overlay", "fuse-overlayfs": "fuse.fuse-overlayfs", "vfs": lines[2]}[driver]
    assert containers(rl) == before
    assert rl.wait_no_processes() == []  # fuse-overlayfs is stopped with its container


# A caller with children of its own (the builder's store worker, the API's connections) runs a
# container in-process: only the container's fuse-overlayfs daemon is stopped after it.
_BYSTANDER = """
import os, subprocess, sys
from rootless import engine
from rootless.context import build
from rootless.image.specgen import RunOptions

bystander = subprocess.Popen(["sleep", "60"])
code = engine.run(build(), RunOptions(image="busybox", command=("true",), rm=True, network="none"),
                  storage_driver="fuse-overlayfs")
try:
    with open(f"/proc/{bystander.pid}/stat") as f:
        alive = f.read().rsplit(")", 1)[1].split()[0] != "Z"
except FileNotFoundError:
    alive = False
bystander.kill()
bystander.wait()
print(code, alive)
"""


def test_fuse_overlayfs_run_stops_only_its_own_leftovers(rl: RootlessEnv) -> None:
    need(shutil.which("fuse-overlayfs") is not None and os.access("/dev/fuse", os.R_OK | os.W_OK),
         "fuse-overlayfs or /dev/fuse is missing")
    import sys

    cp = subprocess.run([sys.executable, "-c", _BYSTANDER], env=rl.env, cwd=rl.home, capture_output=True,
                        text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.split() == ["0", "True"], cp.stdout + cp.stderr  # the caller's own child lives on
    assert rl.wait_no_processes() == []  # and the container's fuse-overlayfs daemon is gone


def test_debian_apt_and_setuid(rl: RootlessEnv, images: TestImages) -> None:
    images.require("library/debian:bookworm")
    text = out(rl, "debian:bookworm", "sh", "-c", "apt-get --version | head -1; ls -l /usr/bin/passwd",
               timeout=600)
    first, ls = text.splitlines()
    assert first.startswith("apt ")
    assert ls.startswith("-rwsr-xr-x") and " root root " in ls


# --------------------------------------------------------------------------- terminal


class Tmux:
    def __init__(self, socket: str, env: dict[str, str]) -> None:
        self.base = ["tmux", "-L", socket]
        self.env = env

    def __call__(self, *args: str) -> str:
        return subprocess.run([*self.base, *args], env=self.env, check=True, capture_output=True,
                              text=True).stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "t")

    def wait(self, needle: str, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.screen()
            if needle in s:
                return s
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not on screen:\n{self.screen()}")


def test_interactive_shell_in_tmux(rl: RootlessEnv, tmp_path: Path) -> None:
    need(shutil.which("tmux") is not None, "tmux is not installed")
    env = {**rl.env, "TERM": "xterm"}
    tmux = Tmux(f"rootless-test-{os.getpid()}-{rl.marker}", env)
    status = tmp_path / "status"
    cmd = " ".join(shlex.quote(a) for a in [*rl.command, "run", "--rm", "-it", BUSYBOX, "sh"])
    modes = tmp_path / "stty"
    tmux("new-session", "-d", "-s", "t", "-x", "100", "-y", "30",
         f"stty -a > {modes}.before; {cmd}; echo $? > {status}; stty -a > {modes}.after; sleep 60")
    try:
        tmux.wait("/ #")
        tmux("send-keys", "-t", "t", "tty; stty size; echo $TERM; echo mark-$((6*7))", "Enter")
        screen = tmux.wait("mark-42")
        assert "/dev/pts/0" in screen and "30 100" in screen and "xterm" in screen
        tmux("resize-window", "-t", "t", "-x", "120", "-y", "40")
        time.sleep(0.3)
        tmux("send-keys", "-t", "t", "stty size", "Enter")
        tmux.wait("40 120")
        # Ctrl-C goes through the pty to the foreground job, not to rootless
        tmux("send-keys", "-t", "t", "sleep 100", "Enter")
        time.sleep(0.3)
        tmux("send-keys", "-t", "t", "C-c")
        tmux("send-keys", "-t", "t", "echo after-$((1+1))", "Enter")
        tmux.wait("after-2")
        tmux("send-keys", "-t", "t", "exit 3", "Enter")
        deadline = time.monotonic() + 15
        # the shell creates the file before echo writes to it
        while not (status.exists() and status.read_text().endswith("\n")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status.read_text().strip() == "3"
        # raw mode is undone: the terminal's modes are what they were before
        deadline = time.monotonic() + 5
        while not Path(f"{modes}.after").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        before = Path(f"{modes}.before").read_text().split()
        after = Path(f"{modes}.after").read_text().split()
        assert "icanon" in after and "echo" in after
        assert [w for w in before if w.startswith("-") or w in ("icanon", "echo", "isig", "opost")] == \
            [w for w in after if w.startswith("-") or w in ("icanon", "echo", "isig", "opost")]
    finally:
        subprocess.run([*tmux.base, "kill-server"], env=env, capture_output=True)


def test_tty_without_terminal_on_our_side(rl: RootlessEnv) -> None:
    cp = run(rl, "-t", BUSYBOX, "sh", "-c", "tty; stty size")
    assert cp.returncode == 0
    assert cp.stdout.splitlines()[0] == "/dev/pts/0"
