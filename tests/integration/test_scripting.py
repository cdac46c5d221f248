"""The CLI that scripts use, as the unprivileged user: Go-template --format on ps, images,
inspect, info and stats; the everyday commands and flags scripts written for Podman type.
Reference: rootless Podman 4.3."""

from __future__ import annotations

import json
import re

import pytest

from tests.integration import test_lifecycle
from tests.integration.harness import RootlessEnv

pytestmark = pytest.mark.integration

BUSYBOX = test_lifecycle.BUSYBOX
rl = test_lifecycle.rl  # the module-scoped store with busybox pulled


def test_format_templates(rl: RootlessEnv) -> None:
    name = "fmt-sleeper"
    cid = rl("run", "-d", "--name", name, BUSYBOX, "sleep", "300", check=True).stdout.strip()
    try:
        out = rl("ps", "--format", "{{.Names}} {{.ID}} {{.State}}", check=True).stdout
        assert f"{name} {cid[:12]} Up " in out, out
        table = rl("ps", "--format", "table {{.ID}}\\t{{.Names}}", check=True).stdout.splitlines()
        assert re.fullmatch(r"CONTAINER ID\s+NAMES", table[0]), table
        assert any(re.fullmatch(rf"{cid[:12]}\s+{name}", ln) for ln in table[1:]), table
        pid = rl("inspect", "--format", "{{.State.Pid}}", name, check=True).stdout.strip()
        assert int(pid) > 1
        assert rl("inspect", "-f", "{{.Name}} {{.State.Running}}", name, check=True).stdout == f"{name} true\n"
        assert rl("container", "inspect", "-f", "{{.Id}}", name, check=True).stdout == f"{cid}\n"
    finally:
        rl("rm", "-f", name)

    images = rl("images", "--format", "{{.Repository}}:{{.Tag}}", check=True).stdout.splitlines()
    assert any(ln.endswith("/library/busybox:latest") for ln in images), images
    size = rl("image", "inspect", "--format", "{{.Size}}", BUSYBOX, check=True).stdout.strip()
    assert int(size) > 0
    assert json.loads(rl("image", "inspect", "-f", "{{json .RootFS.Layers}}", BUSYBOX, check=True).stdout)
    info = rl("info", "--format", "{{.Host.Arch}} {{.Host.Security.Rootless}} {{.Store.GraphRoot}}",
              check=True).stdout.split()
    assert info == ["amd64", "true", str(rl.store)] or info[1:] == ["true", str(rl.store)], info


def test_bad_template_is_one_line(rl: RootlessEnv) -> None:
    cp = rl("ps", "-a", "--format", "{{.Nmae")
    assert cp.returncode == 125
    assert cp.stderr.startswith("Error: template: ps:1:1: "), cp.stderr
    assert "Traceback" not in cp.stderr
    rl("run", "-d", "--name", "fmt-bad", BUSYBOX, "sleep", "300", check=True)
    try:
        cp = rl("ps", "--format", "{{.Nmae}}")
        assert cp.returncode == 125
        assert cp.stderr.splitlines()[0] == 'Error: template: ps:1:3: executing "ps" at <.Nmae>: ' \
            "can't evaluate field Nmae", cp.stderr
    finally:
        rl("rm", "-f", "fmt-bad")


def test_events_seen_by_a_concurrent_stream(rl: RootlessEnv) -> None:
    import subprocess
    import time

    since = str(time.time())
    watcher = subprocess.Popen([*rl.command, "events", "--since", since, "--format", "json",
                                "--filter", "type=container"], env=rl.env, cwd=rl.home, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        time.sleep(1)  # the stream is watching before the container is made
        cid = rl("run", "-d", "--name", "ev-one", BUSYBOX, "sh", "-c", "exit 3", check=True).stdout.strip()
        rl("wait", "ev-one", check=True)
        rl("rm", "ev-one", check=True)
        seen: list[dict[str, object]] = []
        deadline = time.monotonic() + 20
        assert watcher.stdout is not None
        while time.monotonic() < deadline:
            line = watcher.stdout.readline()
            if not line:
                break
            seen.append(json.loads(line))
            if seen[-1]["Status"] == "remove":
                break
    finally:
        watcher.kill()
        watcher.wait()
    assert [e["Status"] for e in seen] == ["create", "start", "died", "remove"], seen
    assert all(e["ID"] == cid and e["Name"] == "ev-one" and e["Type"] == "container" for e in seen)
    assert seen[2]["ContainerExitCode"] == 3
    # the same, logged: --stream=false prints and exits; filters and templates apply
    out = rl("events", "--stream=false", "--since", since, "--filter", "event=died",
             "--format", "{{.Name}} {{.Status}} {{.ContainerExitCode}}", check=True).stdout
    assert out == "ev-one died 3\n", out
    text = rl("events", "--stream=false", "--since", since, "--filter", "container=ev-one", check=True).stdout
    assert re.search(rf" container create {cid} \(image=\S+busybox:latest, name=ev-one\)$", text, re.M), text


def test_events_backend_none_records_nothing(rl: RootlessEnv) -> None:
    import time

    since = str(time.time())
    rl("--events-backend", "none", "create", "--name", "ev-none", BUSYBOX, "true", check=True)
    rl("rm", "ev-none", check=True)
    out = rl("events", "--stream=false", "--since", since, "--filter", "container=ev-none", check=True).stdout
    assert out.split()[4:6] == ["container", "remove"] and len(out.splitlines()) == 1, out


def test_version_and_global_flags(rl: RootlessEnv) -> None:
    out = rl("version", check=True).stdout
    assert re.search(r"^Version:\s+\d+\.\d+\.\d+$", out, re.M), out
    assert re.fullmatch(r"\d+\.\d+\.\d+\n", rl("version", "--format", "{{.Client.Version}}", check=True).stdout)
    assert json.loads(rl("version", "--format", "json", check=True).stdout)["Client"]["OsArch"].startswith("linux/")
    cp = rl("--log-level", "loud", "ps")
    assert cp.returncode == 1 and cp.stderr.startswith('Error: log level "loud" is not valid'), cp.stderr
    assert rl("--noout", "ps", "-a", check=True).stdout == ""
    cp = rl("--events-backend", "journald", "ps")
    assert cp.returncode == 125 and "--events-backend 'journald'" in cp.stderr


def test_exists_rename_top_and_error_wording(rl: RootlessEnv) -> None:
    rl("run", "-d", "--name", "ex-one", BUSYBOX, "sh", "-c", "sleep 300 & exec sleep 301", check=True)
    try:
        assert rl("container", "exists", "ex-one").returncode == 0
        assert rl("container", "exists", "ex-nope").returncode == 1
        assert rl("image", "exists", BUSYBOX).returncode == 0
        assert rl("image", "exists", "no/such-image").returncode == 1
        rl("rename", "ex-one", "ex-two", check=True)
        assert rl("container", "exists", "ex-one").returncode == 1
        assert rl("ps", "--format", "{{.Names}}", "--filter", "name=^ex-", check=True).stdout == "ex-two\n"
        top = rl("top", "ex-two", check=True).stdout.splitlines()
        assert re.fullmatch(r"USER\s+PID\s+PPID\s+%CPU\s+ELAPSED\s+TTY\s+TIME\s+COMMAND", top[0]), top
        assert re.fullmatch(r"root\s+1\s+0\s+\S+\s+\S+\s+\?\s+\S+\s+sleep 301", top[1]), top
        assert any(re.fullmatch(r"root\s+\d+\s+1\s+.*sleep 300", ln) for ln in top[2:]), top
        assert rl("top", "ex-two", "pid", "comm", check=True).stdout.split() == ["PID", "COMMAND", "1", "sleep",
                                                                                  *top[2].split()[1:2], "sleep"]
        cp = rl("container", "top", "ex-two", "-o", "pid,args")  # ps(1) options: the container's busybox ps
        assert cp.returncode == 0 and "sleep 301" in cp.stdout, cp.stderr
    finally:
        rl("rm", "-f", "ex-two")
    cp = rl("rm", "ex-nope")
    assert cp.returncode == 1
    assert cp.stderr == 'Error: no container with name or ID "ex-nope" found: no such container\n' \
        'Hint: `rootless ps -a` lists the containers\n', cp.stderr
    cp = rl("inspect", "ex-nope")
    assert cp.returncode == 125 and cp.stderr.startswith('Error: no such object: "ex-nope"'), cp.stderr


def test_rm_script_cleanup_line(rl: RootlessEnv) -> None:
    import time

    assert rl("rm", "-i", "rm-nope", check=True).stdout == ""
    rl("run", "-d", "--name", "rm-slow", BUSYBOX, "sleep", "300", check=True)
    # a container that removes itself while `rm -af` works through the list is no error
    rl("run", "-d", "--rm", "--name", "rm-self", BUSYBOX, "sh", "-c", "sleep 1", check=True)
    t0 = time.monotonic()
    cp = rl("rm", "-t", "0", "--all", "--force", "--ignore")
    assert cp.returncode == 0, cp.stderr
    assert time.monotonic() - t0 < 20
    assert rl("ps", "-aq", "--filter", "name=^rm-", check=True).stdout == ""


def test_start_all_and_wait_conditions(rl: RootlessEnv) -> None:
    rl("create", "--name", "sa-one", BUSYBOX, "sleep", "300", check=True)
    rl("create", "--name", "sa-two", BUSYBOX, "sh", "-c", "exit 4", check=True)
    try:
        rl("start", "--all", check=True)
        assert rl("wait", "--condition", "running", "--interval", "50ms", "sa-one", check=True).stdout == "-1\n"
        assert rl("wait", "--condition", "exited", "sa-two", check=True).stdout == "4\n"
        cp = rl("wait", "--condition", "sleeping", "sa-one")
        assert cp.returncode == 125 and "--condition 'sleeping'" in cp.stderr
    finally:
        rl("rm", "-f", "sa-one", "sa-two")


def test_pause_without_a_cgroup_is_a_clear_error(rl: RootlessEnv) -> None:
    from tests.integration.harness import assert_clean_error

    rl("run", "-d", "--name", "pz", BUSYBOX, "sleep", "300", check=True)
    try:
        if json.loads(rl("inspect", "pz", check=True).stdout)[0]["State"]["CgroupPath"]:
            pytest.skip("the container has a cgroup here: pause is tested in the VM lane")
        cp = rl("pause", "pz")
        assert_clean_error(cp, 125, "pause container pz: no cgroup v2 freezer")
        assert "Hint: pause needs cgroup v2 delegated to you" in cp.stderr
        assert rl("ps", "--format", "{{.Status}}", "--filter", "name=^pz$", check=True).stdout.startswith("Up ")
        assert_clean_error(rl("unpause", "pz"), 125, "container pz is running: cannot unpause it")
    finally:
        rl("rm", "-f", "pz")


def test_labels_cidfile_replace_and_record_flags(rl: RootlessEnv, tmp_path_factory: pytest.TempPathFactory) -> None:
    d = tmp_path_factory.mktemp("flags")
    (d / "labels").write_text("# team labels\ntier=web\nowner=ops\n")
    cidfile = d / "cid"
    cid = rl("run", "-d", "--name", "lb", "--label", "app=shop", "-l", "owner=me", "--label-file", str(d / "labels"),
             "--cidfile", str(cidfile), "--stop-signal", "SIGUSR1", "--stop-timeout", "2", BUSYBOX,
             "sleep", "300", check=True).stdout.strip()
    try:
        assert cidfile.read_text() == cid
        data = json.loads(rl("inspect", "lb", check=True).stdout)[0]
        assert data["Config"]["Labels"] == {"tier": "web", "owner": "me", "app": "shop"}
        assert data["Config"]["StopSignal"] == "SIGUSR1"
        assert rl("ps", "-q", "--filter", "label=app=shop", check=True).stdout == f"{cid[:12]}\n"
        assert rl("ps", "-q", "--filter", "label=app=other", check=True).stdout == ""
        assert rl("ps", "--format", "{{index .Labels \"tier\"}}", "--filter", "name=^lb$", check=True).stdout == "web\n"
        cp = rl("run", "-d", "--name", "lb2", "--cidfile", str(cidfile), BUSYBOX, "true")
        assert cp.returncode == 125 and "container ID file" in cp.stderr
        # --replace: the old container of that name goes
        new = rl("run", "-d", "--replace", "--name", "lb", BUSYBOX, "sleep", "300", check=True).stdout.strip()
        assert new != cid and rl("container", "exists", cid).returncode == 1
    finally:
        rl("rm", "-f", "lb")
    for bad, msg in ((["--restart", "sometimes"], 'invalid restart policy "sometimes"'),
                     (["--restart", "always", "--rm"], "the --rm option conflicts with --restart"),
                     (["--label", "=x"], "the label has no name"), (["--tz", "Mars/Olympus"], "unknown time zone"),
                     (["--umask", "999"], "not an octal mask"), (["--log-opt", "max-size=1"], "at least 4k"),
                     (["--health-retries", "2"], "needs a health check"), (["-a", "stdout", "-d"], "conflicting")):
        cp = rl("run", *bad, BUSYBOX, "true")
        from tests.integration.harness import assert_clean_error

        assert_clean_error(cp, 125, msg)
    assert rl("ps", "-aq", "--filter", "name=^lb2$", check=True).stdout == ""


def test_process_flags(rl: RootlessEnv) -> None:
    out = rl("run", "--rm", "--tz", "Europe/Paris", "--umask", "0077", "--group-add", "1234", "--shm-size", "8m",
             BUSYBOX, "sh", "-c", "echo $TZ; umask; id -G; head -c 4 /etc/localtime; echo;"
             "grep ' /dev/shm ' /proc/mounts", check=True).stdout.splitlines()
    assert out[0] == "Europe/Paris" and out[1] == "0077", out
    assert "1234" in out[2].split() and out[3] == "TZif", out
    assert "size=8192k" in out[4], out
    # -a stdout: the container's standard error is not shown
    cp = rl("run", "--rm", "-a", "stdout", BUSYBOX, "sh", "-c", "echo out; echo err >&2", check=True)
    assert cp.stdout == "out\n" and "err" not in cp.stderr
    # --rmi: the image goes with the container, unless another container uses it: a store of its own
    # (the module's store has other tests' containers of busybox), and a second name keeps busybox
    from tests.integration.harness import RootlessEnv as Env

    own = Env(rl.base / "rmi-store", rl.config_text)
    try:
        own("pull", "-q", BUSYBOX, check=True)
        own("tag", BUSYBOX, "localhost/rmi-test:1", check=True)
        own("run", "--rmi", "localhost/rmi-test:1", "true", check=True)
        assert own("image", "exists", "localhost/rmi-test:1").returncode == 1
        assert own("image", "exists", BUSYBOX).returncode == 0
    finally:
        own.kill_leftovers()


def test_expose_publishes_with_P(rl: RootlessEnv) -> None:
    rl("run", "-d", "--name", "exp", "--expose", "8081", "-P", BUSYBOX, "sleep", "300", check=True)
    try:
        assert re.fullmatch(r"8081/tcp -> 0\.0\.0\.0:\d+\n", rl("port", "exp", check=True).stdout)
    finally:
        rl("rm", "-f", "exp")


def test_log_rotated_at_its_size_and_driver_none(rl: RootlessEnv) -> None:
    rl("run", "-d", "--name", "lr", "--log-opt", "max-size=8k", BUSYBOX, "sh", "-c",
       "i=0; while [ $i -lt 400 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done", check=True)
    try:
        assert rl("wait", "lr", check=True).stdout == "0\n"
        log = rl.runroot / "containers" / json.loads(rl("inspect", "lr", check=True).stdout)[0]["Id"] / "ctr.log"
        assert log.stat().st_size <= 8192
        lines = rl("logs", "lr", check=True).stdout.splitlines()
        assert lines[-1].startswith("line-399-") and not any(ln.startswith("line-0-") for ln in lines), lines[:3]
    finally:
        rl("rm", "-f", "lr")
    rl("run", "-d", "--name", "ln", "--log-driver", "none", BUSYBOX, "echo", "hello", check=True)
    try:
        rl("wait", "ln", check=True)
        assert rl("logs", "ln", check=True).stdout == ""
    finally:
        rl("rm", "-f", "ln")


def test_restart_policy_brings_back_a_failing_container_but_not_after_stop(rl: RootlessEnv) -> None:
    rl("run", "-d", "--name", "rs", "--restart", "on-failure:3", BUSYBOX, "sh", "-c", "sleep 0.3; exit 1",
       check=True)
    try:
        def restarts() -> int:
            return int(rl("inspect", "-f", "{{.State.Restarts}}", "rs", check=True).stdout)

        test_lifecycle.wait_for(lambda: restarts() == 3 and not json.loads(
            rl("inspect", "rs", check=True).stdout)[0]["State"]["Running"], 60, "three restarts, then rest")
        import time

        time.sleep(2)
        assert restarts() == 3  # on-failure:3 stops there
    finally:
        rl("rm", "-f", "rs")
    rl("run", "-d", "--name", "ra", "--restart", "always", BUSYBOX, "sleep", "300", check=True)
    try:
        pid = rl("inspect", "-f", "{{.State.Pid}}", "ra", check=True).stdout.strip()
        rl("kill", "ra", check=True)  # an end that is no `stop`: always restarts it
        test_lifecycle.wait_for(
            lambda: rl("inspect", "-f", "{{.State.Running}} {{.State.Pid}}", "ra", check=True).stdout.split()
            not in (["true", pid], ["false", "0"]), 30, "a restart after kill")
        rl("stop", "-t", "1", "ra", check=True)
        import time

        time.sleep(2)
        st = json.loads(rl("inspect", "ra", check=True).stdout)[0]["State"]
        assert st["Running"] is False and st["Restarts"] == 1, st
    finally:
        rl("rm", "-f", "ra")


def test_health_check_turns_unhealthy(rl: RootlessEnv) -> None:
    import time

    since = str(time.time())
    rl("run", "-d", "--name", "hc", "--health-cmd", "test -e /tmp/ok", "--health-interval", "1s",
       "--health-retries", "2", BUSYBOX, "sh", "-c", "touch /tmp/ok; sleep 300", check=True)
    try:
        def status() -> str:
            return rl("inspect", "-f", "{{.State.Health.Status}}", "hc", check=True).stdout.strip()

        test_lifecycle.wait_for(lambda: status() == "healthy", 30, "healthy")
        assert "(healthy)" in rl("ps", "--format", "{{.Status}}", "--filter", "name=^hc$", check=True).stdout
        assert rl("healthcheck", "run", "hc").returncode == 0
        rl("exec", "hc", "rm", "/tmp/ok", check=True)
        test_lifecycle.wait_for(lambda: status() == "unhealthy", 30, "unhealthy")
        cp = rl("healthcheck", "run", "hc")
        assert cp.returncode == 1 and cp.stdout == "unhealthy\n"
        log = json.loads(rl("inspect", "hc", check=True).stdout)[0]["State"]["Health"]
        assert log["FailingStreak"] >= 2 and log["Log"][-1]["ExitCode"] == 1
        ev = rl("events", "--stream=false", "--since", since, "--filter", "event=health_status", "--format",
                "{{.Attributes.health_status}}", check=True).stdout.split()
        assert ev[:1] == ["healthy"] and "unhealthy" in ev, ev
    finally:
        rl("rm", "-f", "hc")
    rl("run", "-d", "--name", "hk", "--health-cmd", "false", "--health-interval", "1s", "--health-retries", "1",
       "--health-on-failure", "kill", BUSYBOX, "sleep", "300", check=True)
    try:
        test_lifecycle.wait_for(
            lambda: rl("inspect", "-f", "{{.State.Running}}", "hk", check=True).stdout == "false\n", 30,
            "killed when unhealthy")
    finally:
        rl("rm", "-f", "hk")


def test_diff_lists_added_changed_and_deleted_paths(rl: RootlessEnv) -> None:
    rl("run", "-d", "--name", "df", BUSYBOX, "sh", "-c",
       "mkdir /newdir && echo x > /newdir/f && echo y >> /etc/passwd && rm /bin/ls && sleep 300", check=True)
    try:
        test_lifecycle.wait_for(lambda: "A /newdir/f" in rl("diff", "df", check=True).stdout, 20, "the changes")
        lines = rl("diff", "df", check=True).stdout.splitlines()
        for want in ("A /newdir", "A /newdir/f", "C /etc", "C /etc/passwd", "D /bin/ls"):
            assert want in lines, lines
        assert lines == sorted(lines, key=lambda ln: ln[2:])
        data = json.loads(rl("container", "diff", "--format", "json", "df", check=True).stdout)
        assert "/bin/ls" in data["deleted"] and "/newdir" in data["added"] and "/etc" in data["changed"]
    finally:
        rl("rm", "-f", "df")


def test_system_df_prune_and_reset(rl: RootlessEnv) -> None:
    rl("create", "--name", "sd-stopped", BUSYBOX, "true", check=True)
    rl("run", "-d", "--name", "sd-up", BUSYBOX, "sleep", "300", check=True)
    try:
        out = rl("system", "df", check=True).stdout.splitlines()
        assert re.fullmatch(r"TYPE\s+TOTAL\s+ACTIVE\s+SIZE\s+RECLAIMABLE", out[0]), out
        rows = {ln.split()[0]: ln.split() for ln in out[1:]}
        assert int(rows["Containers"][1]) >= 2 and int(rows["Containers"][2]) >= 1, out
        assert rl("system", "df", "--format", "{{.Type}}={{.Total}}", check=True).stdout.splitlines()[0] \
            .startswith("Images=")
        assert "Containers space usage:" in rl("system", "df", "-v", check=True).stdout
        # without -f: a question; no answer keeps everything
        rl("system", "prune", input="n\n", check=True)
        assert rl("container", "exists", "sd-stopped").returncode == 0
        pruned = rl("system", "prune", "-f", check=True).stdout
        assert "Deleted Containers" in pruned and rl("container", "exists", "sd-stopped").returncode == 1
        assert rl("container", "exists", "sd-up").returncode == 0  # running: kept
    finally:
        rl("rm", "-f", "sd-up", "sd-stopped")


def test_system_reset_empties_the_store(rl_shared: RootlessEnv, tmp_path_factory: pytest.TempPathFactory) -> None:
    from tests.integration.harness import RootlessEnv as Env

    env = Env(tmp_path_factory.mktemp("reset"), rl_shared.config_text)
    env("pull", "-q", BUSYBOX, check=True)
    env("run", "-d", "--name", "rs-up", BUSYBOX, "sleep", "300", check=True)
    env("system", "reset", "-f", check=True)
    assert env("ps", "-aq", check=True).stdout == "" and env("images", "-q", check=True).stdout == ""


def test_podman_behaviour_fixes(rl: RootlessEnv, tmp_path_factory: pytest.TempPathFactory) -> None:
    from tests.integration.harness import assert_clean_error

    d = tmp_path_factory.mktemp("twomounts")
    cp = rl("run", "--rm", "-v", f"{d}:/data", "--tmpfs", "/data", BUSYBOX, "true")
    assert_clean_error(cp, 125, "/data: duplicate mount destination")
    out = rl("run", "--rm", "--security-opt", "no-new-privileges:true", BUSYBOX, "grep", "NoNewPrivs",
             "/proc/self/status", check=True).stdout
    assert out.split() == ["NoNewPrivs:", "1"], out


def test_image_tree(rl: RootlessEnv) -> None:
    out = rl("image", "tree", BUSYBOX, check=True).stdout.splitlines()
    assert out[0].startswith("Image ID: ") and out[1].startswith("Tags:     [") and out[3] == "Image Layers", out
    assert re.fullmatch(r"└── ID: [0-9a-f]{12} Size: \S+ Top Layer of: \[.*busybox:latest.*\]", out[-1]), out
    assert rl("image", "tree", "--whatrequires", BUSYBOX, check=True).stdout.startswith("Image ID: ")


def test_pull_tls_verify_and_authfile(tmp_path_factory: pytest.TempPathFactory, registry: object,
                                      mirror: object, auth_registries: object, images: object) -> None:
    from tests.integration.conftest import BASIC_PASSWORD, BASIC_USER
    from tests.integration.harness import RootlessEnv as Env
    from tests.integration.harness import rootless_config

    images.require("library/busybox:latest")  # type: ignore[attr-defined]
    host = registry.host  # type: ignore[attr-defined]
    basic = auth_registries.basic.host  # type: ignore[attr-defined]
    # a config that trusts no plain-HTTP registry but the Docker Hub mirror
    env = Env(tmp_path_factory.mktemp("tls"), rootless_config(mirror.host, []))  # type: ignore[attr-defined]
    try:
        cp = env("pull", "-q", f"{host}/library/busybox:latest")
        assert cp.returncode == 125, cp.stderr
        env("pull", "-q", "--tls-verify=false", f"{host}/library/busybox:latest", check=True)
        authfile = env.base / "my-auth.json"
        env("login", "--tls-verify=false", "--authfile", str(authfile), "-u", BASIC_USER, "-p", BASIC_PASSWORD,
            basic, check=True)
        assert basic in json.loads(authfile.read_text())["auths"]
        assert not (env.runroot / "auth.json").exists()
        env("pull", "-q", "--tls-verify=false", "--authfile", str(authfile), f"{basic}/private/busybox", check=True)
        env("logout", "--authfile", str(authfile), basic, check=True)
        assert basic not in json.loads(authfile.read_text()).get("auths", {})
    finally:
        env.kill_leftovers()


def test_attach_follows_output_and_passes_signals(rl: RootlessEnv) -> None:
    import signal
    import subprocess
    import time

    rl("run", "-d", "--name", "at1", BUSYBOX, "sh", "-c", "sleep 1; echo hello; exit 3", check=True)
    try:
        cp = rl("attach", "--no-stdin", "at1")
        assert cp.returncode == 3 and cp.stdout == "hello\n", (cp.returncode, cp.stdout, cp.stderr)
    finally:
        rl("rm", "-f", "at1")
    rl("run", "-d", "--name", "at2", BUSYBOX, "sh", "-c",
       "trap 'echo got-term; exit 7' TERM; while true; do sleep 0.1; done", check=True)
    try:
        p = subprocess.Popen([*rl.command, "container", "attach", "at2"], env=rl.env, cwd=rl.home, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        time.sleep(1.5)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
        assert p.returncode == 7 and "got-term" in out, (p.returncode, out, err)
    finally:
        rl("rm", "-f", "at2")
    cp = rl("attach", "no-such-ctr")
    assert cp.returncode == 125


def test_cp_tar_streams_and_between_containers(rl: RootlessEnv, tmp_path_factory: pytest.TempPathFactory) -> None:
    import io
    import subprocess
    import tarfile

    rl("run", "-d", "--name", "cpa", BUSYBOX, "sh", "-c", "echo from-a > /tmp/a.txt; sleep 300", check=True)
    rl("run", "-d", "--name", "cpb", BUSYBOX, "sleep", "300", check=True)
    try:
        test_lifecycle.wait_for(lambda: rl("exec", "cpa", "cat", "/tmp/a.txt").stdout == "from-a\n", 20, "a.txt")
        rl("cp", "cpa:/tmp/a.txt", "cpb:/tmp/", check=True)
        assert rl("exec", "cpb", "cat", "/tmp/a.txt", check=True).stdout == "from-a\n"
        # a tar archive on standard input, extracted into a directory of the container
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            data = b"streamed\n"
            ti = tarfile.TarInfo("in/s.txt")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        p = subprocess.run([*rl.command, "cp", "-", "cpb:/tmp"], env=rl.env, cwd=rl.home, input=buf.getvalue(),
                           capture_output=True, timeout=60, check=False)
        assert p.returncode == 0, p.stderr
        assert rl("exec", "cpb", "cat", "/tmp/in/s.txt", check=True).stdout == "streamed\n"
        # and one on standard output
        p = subprocess.run([*rl.command, "cp", "cpa:/tmp/a.txt", "-"], env=rl.env, cwd=rl.home, capture_output=True,
                           timeout=60, check=False)
        assert p.returncode == 0, p.stderr
        with tarfile.open(fileobj=io.BytesIO(p.stdout)) as tf:
            f = tf.extractfile("a.txt")
            assert f is not None and f.read() == b"from-a\n"
        # an archive that would write outside the directory is refused
        evil = io.BytesIO()
        with tarfile.open(fileobj=evil, mode="w") as tf:
            ti = tarfile.TarInfo("../../etc/evil")
            ti.size = 1
            tf.addfile(ti, io.BytesIO(b"x"))
        p = subprocess.run([*rl.command, "cp", "-", "cpb:/tmp"], env=rl.env, cwd=rl.home, input=evil.getvalue(),
                           capture_output=True, timeout=60, check=False)
        assert p.returncode == 125 and rl("exec", "cpb", "test", "-e", "/etc/evil").returncode != 0
    finally:
        rl("rm", "-f", "cpa", "cpb")


def test_volume_templates(rl: RootlessEnv) -> None:
    rl("volume", "create", "--label", "k=v", "fmtvol", check=True)
    try:
        assert "fmtvol v\n" in rl("volume", "ls", "--format", "{{.Name}} {{.Labels.k}}", check=True).stdout
        mp = rl("volume", "inspect", "-f", "{{.Mountpoint}}", "fmtvol", check=True).stdout.strip()
        assert mp.startswith("/") and "fmtvol" in mp
    finally:
        rl("volume", "rm", "fmtvol")


def test_device_and_uts_host(rl: RootlessEnv) -> None:
    import socket

    from tests.integration.harness import assert_clean_error

    out = rl("run", "--rm", "--device", "/dev/fuse", "--device", "/dev/net/tun:/dev/tun0:r", BUSYBOX, "sh", "-c",
             "ls -l /dev/fuse /dev/tun0", check=True).stdout
    assert out.count("10,") == 2, out
    assert_clean_error(rl("run", "--rm", "--device", "/etc/passwd", BUSYBOX, "true"), 125, "not a device node")
    assert_clean_error(rl("run", "--rm", "--device", "/dev/no-such", BUSYBOX, "true"), 125, "--device /dev/no-such")
    assert rl("run", "--rm", "--uts", "host", BUSYBOX, "hostname", check=True).stdout.strip() == socket.gethostname()


def test_cp_gives_files_to_the_containers_user(rl: RootlessEnv, tmp_path_factory: pytest.TempPathFactory) -> None:
    d = tmp_path_factory.mktemp("cpown")
    (d / "f.txt").write_text("x\n")
    rl("run", "-d", "--name", "cpu", "--user", "1234:2345", BUSYBOX, "sleep", "300", check=True)
    try:
        rl("cp", str(d / "f.txt"), "cpu:/tmp/", check=True)
        assert rl("exec", "cpu", "stat", "-c", "%u:%g", "/tmp/f.txt", check=True).stdout == "1234:2345\n"
    finally:
        rl("rm", "-f", "cpu")


def test_pid_host(rl: RootlessEnv) -> None:
    out = rl("run", "--rm", "--pid", "host", BUSYBOX, "sh", "-c", "echo $$; test -d /proc/1", check=True).stdout
    assert int(out) != 1  # the host's PID, not 1 in a namespace of its own
    cp = rl("run", "--rm", "--ipc", "host", BUSYBOX, "true")
    assert cp.returncode == 125 and "--ipc 'host' is not supported" in cp.stderr


def test_namespaces_shared_with_another_container(rl: RootlessEnv) -> None:
    """--network/--pid/--ipc/--uts container:NAME join that container's namespaces (in its user
    namespace, as rootless Podman does): the sidecar pattern."""
    from tests.integration.harness import assert_clean_error

    cid = rl("run", "-d", "--name", "nsa", "--hostname", "nsa-host", BUSYBOX, "sh", "-c",
             "echo hi > /tmp/i; httpd -p 127.0.0.1:8080 -h /tmp; exec sleep 300", check=True).stdout.strip()
    try:
        # the loopback listener of nsa answers on the other container's localhost
        out = rl("run", "--rm", "--network", "container:nsa", BUSYBOX, "sh", "-c",
                 "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://127.0.0.1:8080/i && break; sleep 0.2; done; "
                 "cat /etc/resolv.conf; cat /etc/hosts", check=True).stdout
        assert out.startswith("hi\n"), out
        assert "nsa-host" in out  # nsa's /etc/hosts
        assert "10.0.2.3" in out  # nsa's /etc/resolv.conf
        # its processes, in its PID namespace
        ps = rl("run", "--rm", "--pid", "container:nsa", BUSYBOX, "ps", "-o", "pid,args", check=True).stdout
        assert re.search(r"^\s*1 sleep 300$", ps, re.M) and "httpd -p" in ps, ps
        # its host name, in its UTS namespace; an own --hostname conflicts
        assert rl("run", "--rm", "--uts", "container:nsa", BUSYBOX, "hostname", check=True).stdout == "nsa-host\n"
        assert_clean_error(rl("run", "--rm", "--uts", "container:nsa", "--hostname", "x", BUSYBOX, "true"), 125,
                           "--hostname")
        # its IPC namespace: the same SysV IPC namespace as a file's inode
        mine = rl("exec", "nsa", "readlink", "/proc/self/ns/ipc", check=True).stdout
        assert rl("run", "--rm", "--ipc", cid[:12], BUSYBOX, "true").returncode == 125
        theirs = rl("run", "--rm", "--ipc", f"container:{cid}", BUSYBOX, "readlink", "/proc/self/ns/ipc",
                    check=True).stdout
        assert mine == theirs and mine.startswith("ipc:["), (mine, theirs)
        # a detached one, kept: `start` joins again
        rl("create", "--name", "nsb", "--network", "container:nsa", "--pid", "container:nsa", BUSYBOX,
           "sleep", "300", check=True)
        rl("start", "nsb", check=True)
        assert "sleep 300" in rl("exec", "nsb", "ps", "-o", "args", check=True).stdout
        # nsa goes only after the containers that share its namespaces, as under Podman
        err = assert_clean_error(rl("rm", "-f", "nsa"), 125, "has dependent containers")
        nsb = rl("inspect", "-f", "{{.Id}}", "nsb", check=True).stdout.strip()
        assert nsb in err and rl("inspect", "-f", "{{.State.Running}}", "nsa", check=True).stdout == "true\n"
        assert_clean_error(rl("run", "--rm", "--network", "container:nsa", "-p", "8081:80", BUSYBOX, "true"), 125,
                           "publish")
        assert_clean_error(rl("run", "--rm", "--network", "container:nsa", "--dns", "1.1.1.1", BUSYBOX, "true"), 125,
                           "dns")
    finally:
        rl("rm", "-f", "-t", "0", "nsb")
        rl("rm", "-f", "-t", "0", "nsa")
    # Podman's wording for a container that does not exist; one that is not running is named
    assert_clean_error(rl("run", "--rm", "--network", "container:nsa", BUSYBOX, "true"), 125,
                       'looking up container to share net namespace with: no container with name or ID "nsa" found')
    assert_clean_error(rl("run", "--rm", "--pid", "container:nosuch", BUSYBOX, "true"), 125,
                       "share pid namespace")
    rl("create", "--name", "nsc", BUSYBOX, "sleep", "300", check=True)
    try:
        before = set(rl("ps", "-aq", "--no-trunc", check=True).stdout.split())
        assert_clean_error(rl("run", "--rm", "--network", "container:nsc", BUSYBOX, "true"), 125,
                           "container nsc is not running")
        assert set(rl("ps", "-aq", "--no-trunc", check=True).stdout.split()) == before  # nothing left behind
    finally:
        rl("rm", "-f", "nsc")


def test_slirp4netns_cidr_names_its_own_forwarder(rl: RootlessEnv) -> None:
    """--network slirp4netns:cidr=: /etc/resolv.conf names that network's .3 first (slirp4netns's
    forwarder there), as Podman writes it; the container is the network's .100."""
    out = rl("run", "--rm", "--network", "slirp4netns:cidr=10.8.0.0/24", BUSYBOX, "sh", "-c",
             "cat /etc/resolv.conf; ip -4 -o addr show tap0; cat /etc/hosts", check=True).stdout
    servers = [ln.split()[1] for ln in out.splitlines() if ln.startswith("nameserver")]
    assert servers[0] == "10.8.0.3" and "10.0.2.3" not in servers, out
    assert "10.8.0.100/24" in out and re.search(r"^10\.8\.0\.100\t", out, re.M), out


def test_sig_proxy_false_leaves_the_container_its_signals(rl: RootlessEnv) -> None:
    """run --sig-proxy=false: a SIGTERM ends rootless, not the container (it runs on under its own
    monitor, as under Podman's conmon); without a signal, the output and the exit status come through."""
    import signal
    import time

    # without a signal: the output, -i's input and the status, also when --rm removes it at once
    cp = rl("run", "--rm", "-i", "--sig-proxy=false", BUSYBOX, "sh", "-c", "cat; echo out; exit 3", input="in\n")
    assert (cp.returncode, cp.stdout) == (3, "in\nout\n"), cp
    p = rl.popen("run", "--name", "sp", "--sig-proxy=false", BUSYBOX, "sh", "-c",
                 "trap 'echo got TERM' TERM; echo ready; for i in $(seq 100); do sleep 0.1; done; echo done")
    try:
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
        assert p.returncode != 0
        time.sleep(0.5)
        assert rl("inspect", "-f", "{{.State.Running}}", "sp", check=True).stdout == "true\n"
        assert rl("wait", "sp", check=True).stdout == "0\n"
        logs = rl("logs", "sp", check=True).stdout
        assert "got TERM" not in logs and logs.endswith("done\n"), logs
    finally:
        if p.poll() is None:
            p.kill()
        rl("rm", "-f", "-t", "0", "sp")
    # proxied (the default): the container gets it
    p = rl.popen("run", "--rm", BUSYBOX, "sh", "-c", "trap 'echo got TERM; exit 7' TERM; echo ready; "
                 "for i in $(seq 100); do sleep 0.1; done")
    assert p.stdout is not None and p.stdout.readline() == "ready\n"
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=30) == 7 and "got TERM" in p.stdout.read()


def test_volume_U_gives_the_source_to_the_containers_user(rl: RootlessEnv,
                                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    """-v SRC:DST:U: the source and everything in it belong to the container's user (a name the
    image lists, resolved in it), on the host too (its subordinate ID), as Podman's :U does."""
    import os

    d = tmp_path_factory.mktemp("chownU")
    (d / "sub").mkdir()
    (d / "sub" / "f").write_text("x\n")
    (d / "link").symlink_to("/etc/passwd")
    try:
        out = rl("run", "--rm", "-v", f"{d}:/d:U", "--user", "1234:2345", BUSYBOX, "sh", "-c",
                 "stat -c %u:%g /d /d/sub /d/sub/f; echo y > /d/sub/new; stat -c %u /etc/passwd", check=True).stdout
        assert out.split() == ["1234:2345"] * 3 + ["0"], out  # the link itself, not its target
        assert os.stat(d).st_uid not in (os.getuid(), 0)  # the subordinate ID that is 1234 inside
        # a named volume, and the user named by the image's /etc/passwd (busybox lists "nobody")
        out = rl("run", "--rm", "-v", "uvol:/v:U", "--user", "nobody", BUSYBOX, "stat", "-c", "%U", "/v",
                 check=True).stdout
        assert out == "nobody\n", out
        # without U nothing changes hands
        assert rl("run", "--rm", "-v", f"{d}:/d", BUSYBOX, "stat", "-c", "%u", "/d/sub/f",
                  check=True).stdout == "1234\n"
    finally:
        rl("unshare", "rm", "-rf", str(d))
        rl("volume", "rm", "-f", "uvol")


def test_history_and_network_templates(rl: RootlessEnv) -> None:
    """--format Go templates on history, network ls and network inspect, with Podman's field names."""
    from tests.integration.harness import assert_clean_error

    rows = rl("history", "--format", "{{.ID}}|{{.Size}}|{{.CreatedBy}}", BUSYBOX, check=True).stdout.splitlines()
    assert rows and re.fullmatch(r"[0-9a-f]{12}\|[\d.]+ [kM]?B\|.*", rows[0]), rows
    table = rl("history", "--format", "table {{.ID}} {{.Comment}}", BUSYBOX, check=True).stdout.splitlines()
    assert re.fullmatch(r"ID\s+COMMENT", table[0]), table
    rl("network", "create", "--subnet", "10.91.0.0/24", "--label", "k=v", "fmtnet", check=True)
    try:
        out = rl("network", "ls", "--format", "{{.Name}} {{.Driver}} {{.Labels}} {{len .ID}}", check=True).stdout
        assert "fmtnet bridge k=v 12\n" in out, out
        out = rl("network", "inspect", "-f", "{{range .Subnets}}{{.Subnet}} {{.Gateway}}{{end}} {{.Labels.k}}",
                 "fmtnet", check=True).stdout
        assert out == "10.91.0.0/24 10.91.0.1 v\n", out
        assert_clean_error(rl("network", "inspect", "-f", "{{.Nope}}", "fmtnet"), 125, "can't evaluate field Nope")
    finally:
        rl("network", "rm", "fmtnet")


def test_version_shows_the_server_when_a_service_listens(rl: RootlessEnv) -> None:
    """`version`: Client, and Server once `rootless system service` answers on its default socket
    (or CONTAINER_HOST's), as `podman --remote version` prints both."""
    import json

    from tests.integration.apiharness import Service
    from tests.integration.harness import assert_clean_error

    alone = rl("version", check=True).stdout
    assert alone.startswith("Client:") and "Server:" not in alone, alone
    assert "Server" not in json.loads(rl("version", "--format", "json", check=True).stdout)
    # without a service the local engine answers {{.Server...}}, as Podman's does
    assert rl("version", "-f", "{{.Server.Version}}", check=True).stdout == \
        rl("version", "-f", "{{.Client.Version}}", check=True).stdout
    svc = Service(rl)
    try:
        text = rl("version", check=True).stdout
        assert re.search(r"^Client: +rootless$", text, re.M) and re.search(r"^Server: +rootless$", text, re.M), text
        data = json.loads(rl("version", "--format", "json", check=True).stdout)
        assert data["Server"]["APIVersion"] == "1.44" and data["Server"]["Version"] == data["Client"]["Version"]
        assert rl("version", "-f", "{{.Server.APIVersion}} {{.Server.OsArch}}", check=True).stdout.startswith(
            "1.44 linux/")
    finally:
        svc.stop()
    assert_clean_error(rl("version", env={"CONTAINER_HOST": f"unix://{rl.base}/none.sock"}), 125, "CONTAINER_HOST")


def test_events_of_exec_attach_and_a_foreground_run_rm(rl: RootlessEnv) -> None:
    """Podman's events for exec (exec, exec_died with a non-zero code), attach, and a foreground
    `run --rm` that keeps no record (create, start, attach, died, remove), recorded with Podman 4.3."""
    import time

    since = str(time.time())
    rl("run", "--rm", "--name", "ev-fg", BUSYBOX, "sh", "-c", "exit 4")  # recorded: it has a name
    rl("run", "--rm", BUSYBOX, "sh", "-c", "exit 5")  # not recorded
    rl("run", "-d", "--name", "ev-ex", BUSYBOX, "sleep", "300", check=True)
    try:
        assert rl("exec", "ev-ex", "sh", "-c", "exit 3").returncode == 3
        rl("exec", "ev-ex", "true", check=True)
    finally:
        rl("rm", "-f", "-t", "0", "ev-ex")
    rl("create", "--name", "ev-at", BUSYBOX, "true", check=True)
    rl("start", "-a", "ev-at", check=True)
    rl("rm", "ev-at", check=True)
    out = rl("events", "--stream=false", "--since", since, "--format",
             "{{.Name}} {{.Status}} {{.ContainerExitCode}}", check=True).stdout.splitlines()
    fg = [ln for ln in out if ln.startswith("ev-fg ")]
    assert fg == ["ev-fg create 0", "ev-fg start 0", "ev-fg attach 0", "ev-fg died 4", "ev-fg remove 0"], out
    anon = next(ln.split()[0] for ln in out if ln.endswith(" died 5"))
    assert [ln.split(" ", 1)[1] for ln in out if ln.startswith(anon + " ")] == [
        "create 0", "start 0", "attach 0", "died 5", "remove 0"], out
    ex = [ln for ln in out if ln.startswith("ev-ex exec")]
    assert ex == ["ev-ex exec 0", "ev-ex exec_died 3", "ev-ex exec 0", "ev-ex exec_died 0"], out
    assert "ev-at attach 0" in out, out
    text = rl("events", "--stream=false", "--since", since, "--filter", "event=died", "--filter", "container=ev-fg",
              check=True).stdout
    assert re.search(r" container died [0-9a-f]{64} \(image=\S+busybox:latest, name=ev-fg\)$", text, re.M), text
