"""The one declaration per command (rootless.options): parsing rules, --help, completion, dispatch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rootless import cli, commands
from rootless.commands import containers
from rootless.options import Args, Command, UsageError, arg, command_help, flag, parse, value

ROOT = Path(__file__).resolve().parents[2]


def _cmd(path: str) -> Command:
    found = commands.find(path.split())
    assert found is not None, path
    return found[0]


def run_args(*argv: str) -> Args:
    a = parse(_cmd("run"), list(argv))
    assert a is not None
    return a


# --------------------------------------------------------------------------- click's rules, kept

def test_run_defaults() -> None:
    a = run_args("busybox")
    assert (a.image, a.command, a.rm, a.detach, a.env, a.networks, a.pull, a.read_only_tmpfs) == \
        ("busybox", (), False, False, (), (), "missing", True)


def test_everything_after_the_image_is_the_command() -> None:
    a = run_args("-ti", "--rm", "alpine", "sh", "-c", "x", "--rm", "-e", "X=1")
    assert (a.interactive, a.tty, a.rm, a.env) == (True, True, True, ())
    assert a.command == ("sh", "-c", "x", "--rm", "-e", "X=1")


def test_values_in_every_spelling() -> None:
    a = run_args("-e", "A=1", "--env=B=2", "-eC=3", "--env-file", "/f1", "--env-file=/f2", "img")
    assert a.env == ("A=1", "B=2", "C=3") and a.env_files == ("/f1", "/f2")
    a = run_args("-Pp", "9000:90", "-p80", "--publish=127.0.0.1::53/udp", "img")
    assert a.publish_all and a.publish == ("9000:90", "80", "127.0.0.1::53/udp")
    a = run_args("-i", "-e", "-x", "img")  # a value that looks like an option is still a value
    assert a.env == ("-x",) and a.image == "img"


def test_double_dash_ends_the_options() -> None:
    a = run_args("--", "img", "--", "x")
    assert a.image == "img" and a.command == ("--", "x")
    a = run_args("--entrypoint", "", "img", "--", "a")
    assert a.entrypoint == "" and a.command == ("--", "a")


def test_booleans_take_true_and_false_as_podman_does() -> None:
    assert run_args("--rm=true", "img").rm is True
    assert run_args("--rm=false", "img").rm is False
    assert run_args("--rm", "--rm=false", "img").rm is False
    assert run_args("--read-only-tmpfs=false", "img").read_only_tmpfs is False
    assert run_args("--no-read-only-tmpfs", "img").read_only_tmpfs is False
    with pytest.raises(UsageError, match="'--rm': 'maybe' is not a valid boolean"):
        run_args("--rm=maybe", "img")


def test_build_layers_takes_its_value_as_the_next_word_too() -> None:
    def build(*argv: str) -> Args:
        a = parse(_cmd("build"), list(argv))
        assert a is not None
        return a

    assert (build("ctx").layers, build("ctx").squash) == (True, False)
    for argv in (["--layers=false", "ctx"], ["--layers", "false", "ctx"], ["ctx", "--layers", "false"]):
        a = build(*argv)
        assert (a.layers, a.context) == (False, "ctx"), argv
    a = build("--layers", "ctx")  # a context that is not a boolean word stays the context
    assert (a.layers, a.context) == (True, "ctx")
    assert build("--layers", "true", "--squash", "ctx").squash is True
    # only --layers reads a next word: --squash false leaves "false" a positional
    with pytest.raises(UsageError):
        build("--squash", "false", "ctx")


def test_choices_and_integers() -> None:
    assert run_args("--pull=ALWAYS", "img").pull == "always"
    with pytest.raises(UsageError, match="'sometimes' is not one of 'missing', 'always', 'never'"):
        run_args("--pull", "sometimes", "img")
    assert parse(_cmd("logs"), ["--tail", "3", "web"]).tail == 3  # type: ignore[union-attr]
    with pytest.raises(UsageError, match="'x' is not a valid integer"):
        parse(_cmd("logs"), ["--tail", "x", "web"])
    with pytest.raises(UsageError, match="in the range x>=1"):
        parse(_cmd("stats"), ["-i", "0"])


@pytest.mark.parametrize("argv,message", [
    ([], "Missing argument 'IMAGE'."),
    (["--rm"], "Missing argument 'IMAGE'."),
    (["--bogus", "img"], "No such option: --bogus"),
    (["-x", "img"], "No such option: -x"),
    (["-ix", "img"], "No such option: -x"),
    (["--name"], "Option '--name' requires an argument."),
])
def test_refused(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as e:
        parse(_cmd("run"), argv)
    assert e.value.message == message


def test_help_anywhere_before_the_image() -> None:
    assert parse(_cmd("run"), ["--rm", "-h"]) is None
    assert parse(_cmd("run"), ["--help", "img"]) is None
    assert run_args("img", "--help").command == ("--help",)


def test_interspersed_options_after_arguments() -> None:
    a = parse(_cmd("rm"), ["web", "-f", "db"])
    assert a is not None and a.container == ("web", "db") and a.force
    with pytest.raises(UsageError, match=r"Got unexpected extra argument \(extra\)"):
        parse(_cmd("ps"), ["-q", "extra"])


def test_exec_and_unshare_stop_at_the_first_argument() -> None:
    a = parse(_cmd("exec"), ["-it", "-e", "A=1", "web", "ls", "-l", "--color"])
    assert a is not None and (a.interactive, a.tty, a.env, a.container, a.command) == \
        (True, True, ("A=1",), "web", ("ls", "-l", "--color"))
    with pytest.raises(UsageError, match="Missing argument 'COMMAND...'"):
        parse(_cmd("exec"), ["web"])
    a = parse(_cmd("unshare"), ["ls", "-l"])
    assert a is not None and a.command == ("ls", "-l")
    a = parse(_cmd("unshare"), ["--frob", "x"])
    assert a is not None and a.command == ("--frob", "x")


def test_many_then_one_argument() -> None:
    table = Command("x", "X.", lambda: None, args=[arg("SRC", many=True, help="."), arg("DST", help=".")])
    a = parse(table, ["a", "b", "c"])
    assert a is not None and (a.src, a.dst) == (("a", "b"), "c")


def test_dest_and_defaults() -> None:
    o = value("--memory-swap", "-x", help=".")
    assert o.dest == "memory_swap" and o.initial() is None
    assert flag("-a", "--all", help=".").initial() is False
    assert value("-e", "--env", many=True, help=".").initial() == ()


# --------------------------------------------------------------------------- the run table and the engine

def test_run_table_matches_the_engine_input() -> None:
    """Every option of `run` is a field of specgen.RunOptions, or one the engine takes apart."""
    from rootless.image.specgen import RunOptions

    fields = set(RunOptions.__annotations__)
    for o in containers.RUN_OPTIONS:
        assert o.dest in fields or o.dest in containers.RUN_ONLY, o.dest
    opts = containers.run_options(run_args("-v", "/a:/b", "--mount", "type=tmpfs,target=/t", "--env-file", "f",
                                           "--network", "none", "img", "true"))
    assert (opts.volumes, opts.mounts, opts.env_files, opts.network, opts.command) == \
        (("/a:/b",), ("type=tmpfs,target=/t",), ("f",), "none", ("true",))
    assert containers.run_options(run_args("img")).network == ""  # the engine takes the config's
    opts = containers.run_options(run_args("--network", "app", "--net=db", "--network-alias", "web", "--ip",
                                           "10.89.0.5", "img"))
    assert (opts.networks, opts.network, opts.network_alias, opts.ip) == (("app", "db"), "db", ("web",),
                                                                          "10.89.0.5")


def test_create_takes_runs_options_but_detach() -> None:
    run, create = _cmd("run").by_name(), _cmd("create").by_name()
    assert set(run) - set(create) == {"-d", "--detach"}


def test_aliases_find_their_command() -> None:
    assert commands.find(["image", "ls", "-q"]) == (_cmd("images"), ("image", "ls"))
    assert commands.find(["image", "list"]) == (_cmd("images"), ("image", "list"))
    assert commands.find(["image"]) is None and commands.find(["frobnicate"]) is None


# --------------------------------------------------------------------------- dispatch and messages

def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    out, err = capsys.readouterr()
    return int(e.value.code or 0), out, err


@pytest.mark.parametrize("argv,line", [
    (["pull", "--no-such-option", "alpine"], "Error: No such option: --no-such-option"),
    (["frobnicate"], "Error: No such command 'frobnicate'."),
    (["logs"], "Error: Missing argument 'CONTAINER'."),
    (["image", "nope"], "Error: No such command 'nope'."),
    (["rm"], "Error: Invalid value: give at least one container name or ID, or --all"),
])
def test_usage_errors_are_one_line_and_125(argv: list[str], line: str, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "none.toml").write_text("")  # an empty config: ROOTLESS_CONFIG must name a file
    monkeypatch.setenv("ROOTLESS_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    code, _, err = _main(argv, capsys)
    assert code == 125
    errors = [ln for ln in err.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and errors[0].startswith(line), err
    assert "Hint: see 'rootless" in err


def test_help_is_podman_like(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _main(["inspect", "--help"], capsys)
    assert code == 0
    assert out.startswith("Print containers' details") and "Usage:\n  rootless inspect [options] NAME...\n" in out
    assert "Options:\n" in out and "\n  -h, --help" in out and "--format" in out
    code, out, _ = _main(["image", "ls", "-h"], capsys)
    assert code == 0 and "Aliases:\n  rootless images" in out and "--format" in out
    code, out, _ = _main(["--help"], capsys)
    assert code == 0 and "\n  completion " in out and "\n  image " in out and "--log-level" in out


def test_bare_group_prints_its_commands_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _main(["image"], capsys)
    assert code == 125 and "\n  inspect " in err and "\n  ls " in err


def test_every_commands_help_renders() -> None:
    for c in commands.all_commands():
        text = command_help(c)
        assert text.startswith(c.help) and f"rootless {c.name} [options]" in text
        for o in c.options:
            assert o.spellings()[0] in text


def test_no_command_loads_network_or_ui_libraries() -> None:
    """--help of every command, and the table of every command: no typer, httpx, rich or pydantic."""
    code = ("import sys, contextlib, io\n"
            "from rootless import cli, commands\n"
            "for c in commands.all_commands():\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        cli.dispatch([*c.path, '--help'])\n"
            "print(','.join(m for m in ('typer', 'click', 'httpx', 'rich', 'pydantic') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "", out.stdout


def test_run_loads_only_its_own_module() -> None:
    code = ("import sys\nfrom rootless import commands\ncommands.find(['run', 'img'])\n"
            "print(','.join(m for m in sys.modules if m.startswith('rootless.commands.')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "rootless.commands.containers"


_COLLECTOR = """
import gc, sys
from rootless import cli, commands
for word in ("completion", "port"):
    cmd, _ = commands.find([word])
    cmd.handler = lambda *a, word=word: print(word, gc.isenabled(), flush=True) or 0
sys.argv = ["rootless", *sys.argv[1:]]
cli.main()
"""


@pytest.mark.parametrize("argv,seen", [(["completion", "bash"], "completion True"), (["port", "web"], "port False"),
                                       (["--help"], "")])
def test_the_process_ends_early_without_the_collector_only_for_quick_commands(argv: list[str], seen: str,
                                                                               tmp_path: Path) -> None:
    """The process's own command line (main() without arguments): the garbage collector is off
    during start-up and stays off for a quick_exit command (`port`), which ends the process once it
    has printed (os._exit: the output is flushed first); any other command (`completion`) gets it back."""
    (tmp_path / "none.toml").write_text("")
    env = {**os.environ, "ROOTLESS_CONFIG": str(tmp_path / "none.toml"), "XDG_RUNTIME_DIR": str(tmp_path),
           "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data")}
    out = subprocess.run([sys.executable, "-c", _COLLECTOR, *argv], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    if seen:
        assert out.stdout == seen + "\n"
    else:
        assert out.stdout.startswith("Run registry images") and out.stdout.endswith("\n")


# --------------------------------------------------------------------------- completion

@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_name_every_command_and_option(shell: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _main(["completion", shell], capsys)
    assert code == 0
    for c in commands.all_commands():
        assert c.path[-1] in out
        for o in c.options:
            for s in o.spellings():
                spelled = s if shell != "fish" else (f"-l {s[2:]}" if s.startswith("--") else f"-s {s[1:]}")
                assert spelled in out, (c.name, s)


def test_completion_of_an_unknown_shell(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _main(["completion", "tcsh"], capsys)
    assert code == 125 and "Error: completion 'tcsh': no such shell" in err


def _bash_complete(script: Path, words: list[str]) -> list[str]:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    line = " ".join(words)
    prog = (f"source {script}\nCOMP_WORDS=({line})\nCOMP_CWORD={len(words) - 1}\n"
            "_rootless\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n")
    out = subprocess.run([bash, "--norc", "-c", prog], capture_output=True, text=True, check=True,
                         env={**os.environ, "PATH": "/nonexistent"})
    return out.stdout.split()


def test_bash_completion_works(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _main(["completion", "--file", str(tmp_path / "rootless.bash"), "bash"], capsys)
    script = tmp_path / "rootless.bash"
    assert "inspect" in _bash_complete(script, ["rootless", "ins"])
    assert {"ls", "list", "inspect", "prune"} <= set(_bash_complete(script, ["rootless", "image", "''"]))
    assert "--no-trunc" in _bash_complete(script, ["rootless", "--root", "/x", "images", "--no"])
    assert _bash_complete(script, ["rootless", "inspect", "--type", "''"]) == ["all", "container", "image"]
    assert set(_bash_complete(script, ["rootless", "run", "--pull", "''"])) == {"missing", "always", "never"}
    assert "--detach" not in _bash_complete(script, ["rootless", "create", "--de"])


def test_handler_signature(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """cli builds the context from the global options and passes the parsed values."""
    got: list[Any] = []
    cmd = _cmd("port")
    def handler(ctx: Any, a: Args) -> int:
        got.append((ctx, a))
        return 7

    monkeypatch.setattr(cmd, "handler", handler)
    (tmp_path / "none.toml").write_text("")  # an empty config: ROOTLESS_CONFIG must name a file
    monkeypatch.setenv("ROOTLESS_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert cli.dispatch(["--root", str(tmp_path / "r"), "port", "web", "80"]) == 7
    ctx, a = got[0]
    assert str(ctx.layout.root) == str(tmp_path / "r") and (a.container, a.private) == ("web", "80")


def test_rm_force_of_a_missing_container_is_not_an_error(capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """As Podman's: `rm -f NAME` of no container exits 0, `rm NAME` exits 1."""
    (tmp_path / "none.toml").write_text("")  # an empty config: ROOTLESS_CONFIG must name a file
    monkeypatch.setenv("ROOTLESS_CONFIG", str(tmp_path / "none.toml"))
    where = ["--root", str(tmp_path / "store"), "--runroot", str(tmp_path / "run")]
    code, out, err = _main([*where, "rm", "-f", "nope"], capsys)
    assert (code, out, err) == (0, "", "")
    code, out, err = _main([*where, "rm", "nope"], capsys)
    assert code == 1 and err.startswith('Error: no container with name or ID "nope" found: no such container')
    code, out, err = _main([*where, "rm", "-f", "nope", "--", "--also"], capsys)
    assert code == 0


def test_unknown_log_level_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """Podman exits 1 (not 125) for a log level it does not know."""
    with pytest.raises(SystemExit) as e:
        cli.main(["--log-level", "loud", "images"])
    assert e.value.code == 1
    assert capsys.readouterr().err.startswith('Error: log level "loud" is not valid')
