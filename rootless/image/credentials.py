"""Registry credentials for `rootless login` / `logout`.

Our own file is layout.auth_file (under the run root, like Podman's
${XDG_RUNTIME_DIR}/containers/auth.json) in the Docker config format:
{"auths": {"HOST": {"auth": base64("user:password")}}}. Credentials written by
`docker login` in ~/.docker/config.json (or $DOCKER_CONFIG/config.json) are read as
a fallback, never written. Credential helpers (credsStore/credHelpers) are not run.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path
from typing import Any

from rootless.errors import ConfigError, StorageError, errno_hint
from rootless.layout import Layout
from rootless.record import dataclass

# Docker Hub answers under several names; `docker login` files it under the v1 URL.
DOCKER_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io")
DOCKER_HUB_LEGACY_KEY = "https://index.docker.io/v1/"


@dataclass(frozen=True)
class Credential:
    username: str
    password: str
    source: Path  # the file it came from

    def __repr__(self) -> str:  # never print a password by accident
        return f"Credential(username={self.username!r}, password='***', source={str(self.source)!r})"


def normalize_host(key: str) -> str:
    """"https://index.docker.io/v1/" → "docker.io"; "https://reg:5000/v2/" → "reg:5000"."""
    k = key.strip()
    for scheme in ("https://", "http://"):
        if k.lower().startswith(scheme):
            k = k[len(scheme):]
            break
    k = k.split("/", 1)[0].lower()
    return "docker.io" if k in DOCKER_HUB_ALIASES else k


def docker_config_file() -> Path:
    d = os.environ.get("DOCKER_CONFIG")
    return Path(d) / "config.json" if d else Path.home() / ".docker" / "config.json"


def _read(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StorageError(f"cannot read credentials file {path}: {e.strerror}", errno_hint(e)) from None
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError as e:
        raise ConfigError(f"credentials file {path} is not valid JSON: {e}",
                          "fix it or remove it (rootless logout --all removes our own file)") from None
    if not isinstance(data, dict) or not isinstance(data.get("auths", {}), dict):
        raise ConfigError(f"credentials file {path}: \"auths\" must be a JSON object",
                          "fix it or remove it")
    return data


def _decode(entry: Any, path: Path, key: str) -> tuple[str, str] | None:
    if not isinstance(entry, dict):
        return None
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            user, sep, password = base64.b64decode(auth, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise ConfigError(f"credentials file {path}: entry {key!r} has an invalid \"auth\" value",
                              f"run rootless login {normalize_host(key)} again") from None
        return (user, password) if sep else None
    u, p = entry.get("username"), entry.get("password")
    if isinstance(u, str) and isinstance(p, str) and u:
        return u, p
    return None  # identity tokens and helper-only entries: nothing we can use


def _find(data: dict[str, Any] | None, path: Path, host: str) -> Credential | None:
    if not data:
        return None
    want = normalize_host(host)
    for key, entry in data.get("auths", {}).items():
        if isinstance(key, str) and normalize_host(key) == want:
            pair = _decode(entry, path, key)
            if pair:
                return Credential(pair[0], pair[1], path)
    return None


def lookup(layout: Layout, host: str) -> Credential | None:
    """Credentials for a registry host: ours first, then Docker's."""
    ours = _find(_read(layout.auth_file), layout.auth_file, host)
    if ours:
        return ours
    docker = docker_config_file()
    return _find(_read(docker), docker, host)


def get_from(path: Path, host: str) -> tuple[str, str] | None:
    """Credentials for ``host`` from one given file (--authfile), nothing else."""
    c = _find(_read(path), path, host)
    return (c.username, c.password) if c else None


def get(layout: Layout, host: str) -> tuple[str, str] | None:
    c = lookup(layout, host)
    return (c.username, c.password) if c else None


def _write(layout: Layout, data: dict[str, Any]) -> None:
    """Temp file + rename: a reader never sees half a file, and the file is 0600 from
    its creation (mkstemp), so no window exists where others could read it."""
    path = layout.auth_file
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path.parent, 0o700)
        import tempfile

        fd, tmp = tempfile.mkstemp(prefix=".auth-", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1, sort_keys=True)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        raise StorageError(f"cannot write credentials file {path}: {e.strerror}", errno_hint(e)) from None


def save(layout: Layout, host: str, username: str, password: str) -> None:
    data = _read(layout.auth_file) or {}
    auths = {k: v for k, v in data.get("auths", {}).items() if normalize_host(k) != normalize_host(host)}
    auths[normalize_host(host)] = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}
    data["auths"] = auths
    _write(layout, data)


def remove(layout: Layout, host: str) -> bool:
    """Forget the credentials we stored for ``host``; False if we had none (Docker's
    file is left alone, as `podman logout` leaves it)."""
    data = _read(layout.auth_file)
    if not data:
        return False
    want = normalize_host(host)
    auths = data.get("auths", {})
    kept = {k: v for k, v in auths.items() if normalize_host(k) != want}
    if len(kept) == len(auths):
        return False
    data["auths"] = kept
    _write(layout, data)
    return True


def remove_all(layout: Layout) -> int:
    """Forget every credential we stored; returns how many there were."""
    path = layout.auth_file
    try:
        data = _read(path)
    except ConfigError:
        data = None  # a corrupt file is removed all the same
    n = len(data.get("auths", {})) if data else 0
    try:
        path.unlink(missing_ok=True)
    except OSError as e:
        raise StorageError(f"cannot remove credentials file {path}: {e.strerror}", errno_hint(e)) from None
    return n
