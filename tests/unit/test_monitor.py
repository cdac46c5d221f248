"""The monitor's bare loop (python -S on rootless/runtime/monitor.py) and its arguments file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rootless.runtime import childerr, launcher, monitor

ROOT = Path(__file__).resolve().parents[2]


def test_args_file_round_trip(tmp_path: Path) -> None:
    path = str(tmp_path / "monitor.args")
    launcher.write_args(path, [("pid", "12"), ("log", "/r/ctr log"), ("config", "/c"), ("state", "/s"),
                               ("stream", "stdout 5"), ("stream", "pty 7"), ("keep", "9"), ("keep", "10"),
                               ("cgroup", ""), ("then", "/usr/bin/python3"), ("then", "-m rootless"),
                               ("record", '{"status": "exited"}')])
    a = monitor.Args(path)
    assert (a.pid, a.log, a.config, a.state, a.cgroup) == (12, "/r/ctr log", "/c", "/s", "")
    assert a.streams == {5: "stdout", 7: "stdout"} and a.keep == [9, 10]
    assert a.then == ["/usr/bin/python3", "-m rootless"] and json.loads(a.record) == {"status": "exited"}
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    with pytest.raises(ValueError, match="newline"):
        launcher.write_args(path, [("log", "a\nb")])


def test_attach_relays_keys_to_the_pty_and_output_to_the_cli() -> None:
    """`start -a` of a -t container: keys from the CLI's socket reach the pty (kept while the pty
    cannot take them), output goes back on the socket, and the CLI's leaving drops it."""
    import select
    import socket

    master, slave = os.openpty()
    cli, mon = socket.socketpair()
    try:
        a = monitor.Attach(mon.detach(), master)
        assert a.readers() == [a.sock] and a.writers() == []
        cli.sendall(b"keys\n")
        ready, _, _ = select.select(a.readers(), [], [], 5)
        a.pump(ready, [])
        assert a.keys == b"keys\n" and a.readers() == [] and a.writers() == [master]
        a.pump([], [master])
        assert a.keys == b"" and os.read(slave, 100) == b"keys\n"
        a.send(b"output")
        assert cli.recv(100) == b"output"
        cli.close()
        ready, _, _ = select.select(a.readers(), [], [], 5)
        a.pump(ready, [])
        assert a.sock == -1 and a.readers() == [] and a.writers() == []
        a.send(b"nobody listens")  # dropped, no error
        assert monitor.Attach(-1, master).readers() == []
    finally:
        os.close(master)
        os.close(slave)


def test_the_loop_logs_reaps_and_records_the_exit(tmp_path: Path) -> None:
    """A child writing to stdout and stderr and exiting 3: the loop (a bare interpreter, as the
    launcher execs it) logs both streams, reaps it and completes the exit record."""
    config, state_file, log = tmp_path / "config.json", tmp_path / "state.json", tmp_path / "ctr.log"
    config.write_text("{}")
    args = tmp_path / "monitor.args"
    record = json.dumps({"status": "exited", "pid": 1, "exit_code": 0, "finished_at": 0.0, "oom_killed": False})
    driver = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(ROOT)!r})
        from rootless.runtime import launcher
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.execv("/bin/sh", ["sh", "-c", "echo hello; echo oops >&2; printf partial; exit 3"])
        os.close(out_w)
        os.close(err_w)
        for fd in (out_r, err_r):
            os.set_inheritable(fd, True)
        launcher.write_args({str(args)!r}, [("pid", str(pid)), ("log", {str(log)!r}), ("config", {str(config)!r}),
                            ("state", {str(state_file)!r}), ("stream", f"stdout {{out_r}}"),
                            ("stream", f"stderr {{err_r}}"), ("cgroup", ""), ("record", {record!r})])
        os.execv(sys.executable, [sys.executable, "-S", "-E", "-s", {monitor.__file__!r}, {str(args)!r}])
    """)
    subprocess.run([sys.executable, "-c", driver], check=True, timeout=30)
    st = json.loads(state_file.read_text())
    assert st["status"] == "exited" and st["exit_code"] == 3 and st["finished_at"] > 0
    assert st["oom_killed"] is False
    lines = log.read_bytes().splitlines()
    assert [ln.split(b" ", 1)[1] for ln in lines] == [b"stdout F hello", b"stderr F oops", b"stdout P partial"]


def test_one_error_format(tmp_path: Path) -> None:
    from rootless.errors import NotExecutableError

    raw = childerr.encode("exec", FileNotFoundError(2, "No such file or directory", "/bin/x"))
    f = childerr.decode(b"R\nP12\n" + raw)
    assert f is not None and (f.stage, f.errno, f.filename, f.type) == ("exec", 2, "/bin/x", "FileNotFoundError")
    assert isinstance(f.oserror(), FileNotFoundError) and f.oserror().filename == "/bin/x"
    f = childerr.decode(childerr.encode("start", NotExecutableError("exec: \"x\": permission denied", "hint")))
    assert f is not None
    e = f.error()
    assert isinstance(e, NotExecutableError) and e.exit_code == 126 and e.hint == "hint"
    f = childerr.decode(childerr.encode("run", ValueError("bad")))
    assert f is not None and f.message == "ValueError: bad" and type(f.error()).__name__ == "RootlessError"
    assert childerr.decode(b"P12\n") is None and childerr.decode(b"") is None
    assert childerr.decode(b"Egarbage") is not None  # a broken record is still a failure


def test_every_child_uses_the_one_format() -> None:
    """process, userns, nsexec, the launcher and nsworker report through childerr, and nothing
    else writes its own error records."""
    runtime = ROOT / "rootless" / "runtime"
    for name in ("process", "userns", "nsexec", "launcher", "nsworker"):
        assert "childerr" in (runtime / f"{name}.py").read_text(), name
    for f in runtime.glob("*.py"):
        text = f.read_text()
        assert '{"error": msg}' not in text and 'b"E" + json' not in text and 'f"E{stage}' not in text, f.name
