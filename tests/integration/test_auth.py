"""login, logout and pulls from registries that want credentials: htpasswd basic auth and
the bearer-token flow (docs/spec/auth/token.md) with the tests' own token service."""

from __future__ import annotations

import base64
import json
import os
import stat

from tests.integration.conftest import BASIC_PASSWORD, BASIC_USER, TOKEN_PASSWORD, TOKEN_USER
from tests.integration.harness import AuthRegistries, RootlessEnv, Tty, assert_clean_error


def _auth_entries(rl: RootlessEnv) -> dict[str, object]:
    p = rl.runroot / "auth.json"
    if not p.exists():
        return {}
    return json.loads(p.read_text()).get("auths", {})


# --------------------------------------------------------------------------- basic


def test_pull_without_credentials_is_refused(rl: RootlessEnv, auth_registries: AuthRegistries) -> None:
    host = auth_registries.basic.host
    cp = rl("pull", f"{host}/private/busybox")
    line = assert_clean_error(cp, 125)
    assert any(w in line.lower() for w in ("auth", "credential", "login", "denied")), line
    assert rl.images_json() == []


def test_login_then_pull(rl: RootlessEnv, auth_registries: AuthRegistries) -> None:
    host = auth_registries.basic.host
    cp = rl("login", "-u", BASIC_USER, "-p", BASIC_PASSWORD, host, check=True)
    assert "Login Succeeded!" in cp.stdout
    auth_file = rl.runroot / "auth.json"
    assert auth_file.exists(), "credentials go to $XDG_RUNTIME_DIR/rootless/auth.json"
    assert stat.S_IMODE(auth_file.stat().st_mode) == 0o600
    assert host in _auth_entries(rl)
    cp = rl("pull", "-q", f"{host}/private/busybox", check=True)
    assert len(cp.stdout.strip()) == 64
    cp = rl("login", "--get-login", host, check=True)
    assert cp.stdout.strip() == BASIC_USER


def test_login_password_stdin(rl: RootlessEnv, auth_registries: AuthRegistries) -> None:
    host = auth_registries.basic.host
    cp = rl("login", "-u", BASIC_USER, "--password-stdin", host, input=BASIC_PASSWORD + "\n", check=True)
    assert "Login Succeeded!" in cp.stdout
    rl("pull", "-q", f"{host}/private/busybox", check=True)


def test_login_wrong_password_refused(rl: RootlessEnv, auth_registries: AuthRegistries) -> None:
    host = auth_registries.basic.host
    cp = rl("login", "-u", BASIC_USER, "-p", "wrong", host)
    assert_clean_error(cp, 125)
    assert "Login Succeeded" not in cp.stdout
    assert host not in _auth_entries(rl), "refused credentials must not be stored"
    assert_clean_error(rl("pull", f"{host}/private/busybox"), 125)


def test_logout_then_pull_refused(rl: RootlessEnv, auth_registries: AuthRegistries) -> None:
    host = auth_registries.basic.host
    rl("login", "-u", BASIC_USER, "-p", BASIC_PASSWORD, host, check=True)
    cp = rl("logout", host, check=True)
    assert f"Removed login credentials for {host}" in cp.stdout
    assert host not in _auth_entries(rl)
    assert_clean_error(rl("pull", f"{host}/private/busybox"), 125)


def test_logout_all(rl: RootlessEnv, auth_registries: AuthRegistries) -> None:
    rl("login", "-u", BASIC_USER, "-p", BASIC_PASSWORD, auth_registries.basic.host, check=True)
    rl("login", "-u", TOKEN_USER, "-p", TOKEN_PASSWORD, auth_registries.token.host, check=True)
    rl("logout", "--all", check=True)
    assert _auth_entries(rl) == {}


def test_logout_when_not_logged_in(rl: RootlessEnv, auth_registries: AuthRegistries) -> None:
    cp = rl("logout", auth_registries.basic.host)
    assert cp.returncode != 0 and "Traceback" not in cp.stderr
    assert auth_registries.basic.host in cp.stderr


def test_credentials_from_docker_config(rl: RootlessEnv, auth_registries: AuthRegistries) -> None:
    host = auth_registries.basic.host
    docker = rl.home / ".docker"
    docker.mkdir()
    token = base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()
    (docker / "config.json").write_text(json.dumps({"auths": {host: {"auth": token}}}))
    os.chmod(docker / "config.json", 0o600)
    cp = rl("pull", "-q", f"{host}/private/busybox", check=True)
    assert len(cp.stdout.strip()) == 64


# --------------------------------------------------------------------------- bearer token


def test_token_anonymous_pull_of_public_repo(rl: RootlessEnv, auth_registries: AuthRegistries) -> None:
    svc = auth_registries.token_service
    n = len(svc.requests)
    cp = rl("pull", "-q", f"{auth_registries.token.host}/public/busybox", check=True)
    assert len(cp.stdout.strip()) == 64
    asked = svc.requests[n:]
    assert asked, "the pull never asked the token service"
    assert all(r["user"] is None for r in asked), "anonymous pull sent credentials"
    assert any("repository:public/busybox:pull" in r["scopes"] for r in asked), asked


def test_token_private_repo_refused_without_login(rl: RootlessEnv, auth_registries: AuthRegistries) -> None:
    cp = rl("pull", f"{auth_registries.token.host}/private/busybox")
    line = assert_clean_error(cp, 125)
    assert any(w in line.lower() for w in ("auth", "credential", "login", "denied")), line


def test_token_login_then_pull_private(rl: RootlessEnv, auth_registries: AuthRegistries) -> None:
    host = auth_registries.token.host
    svc = auth_registries.token_service
    cp = rl("login", "-u", TOKEN_USER, "-p", TOKEN_PASSWORD, host, check=True)
    assert "Login Succeeded!" in cp.stdout
    n = len(svc.requests)
    rl("pull", "-q", f"{host}/private/busybox", check=True)
    asked = svc.requests[n:]
    scope = "repository:private/busybox:pull"
    assert any(r["user"] == TOKEN_USER and scope in r["scopes"] for r in asked), asked


def test_token_login_wrong_password(rl: RootlessEnv, auth_registries: AuthRegistries) -> None:
    cp = rl("login", "-u", TOKEN_USER, "-p", "nope", auth_registries.token.host)
    assert_clean_error(cp, 125)
    assert auth_registries.token.host not in _auth_entries(rl)


def test_login_prompts_on_a_tty(rl: RootlessEnv, auth_registries: AuthRegistries) -> None:
    host = auth_registries.basic.host
    tty = Tty(rl, [*rl.command, "login", host])
    try:
        tty.wait_for("Username")
        tty.type_line(BASIC_USER)
        tty.wait_for("Password")
        tty.type_line(BASIC_PASSWORD)
        assert tty.wait_exit() == 0, tty.screen()
        screen = tty.screen()
        assert "Login Succeeded!" in screen
        assert BASIC_PASSWORD not in screen, "the password was echoed"
    finally:
        tty.close()
    assert host in _auth_entries(rl)
