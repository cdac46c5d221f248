"""Machinery behind the integration fixtures: a real docker-registry process, a counting
and fault-injecting HTTP proxy in front of it, a bearer-token service, and a runner for
the `rootless` CLI in an isolated environment.

Everything listens on 127.0.0.1 only and is stopped by the fixture that started it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the test process dies, even by SIGKILL
    (prctl(2) PR_SET_PDEATHSIG), so a killed pytest leaves no registry behind."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, ok: Callable[[int], bool], timeout: float = 20,
              proc: subprocess.Popen[Any] | None = None, what: str = "server",
              log: Path | None = None, verify: bool = True) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with status {proc.returncode} while starting:\n{tail}")
        try:
            r = httpx.get(url, timeout=2, verify=verify)
            if ok(r.status_code):
                return
            last = r.status_code
        except httpx.HTTPError as e:
            last = e
        time.sleep(0.05)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} at {url} not ready after {timeout}s (last: {last!r})\n{tail}")


# --------------------------------------------------------------------------- registry


@dataclass
class Registry:
    """A docker-registry (distribution 2.8) serving on 127.0.0.1:port."""

    name: str
    port: int
    root: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    username: str | None = None  # credentials the tests push with
    password: str | None = None
    scheme: str = "http"  # "https" with start_registry(tls=...)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def pusher(self) -> Any:
        from tests.imagebuild import Pusher

        return Pusher(self.url, self.username, self.password)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def start_registry(name: str, workdir: Path, auth: dict[str, Any] | None = None,
                   port: int | None = None, tls: tuple[Path, Path] | None = None) -> Registry:
    """Starts ``docker-registry serve`` with filesystem storage under ``workdir``; over HTTPS
    with ``tls`` = (certificate, key) PEM files."""
    if not os.path.exists(REGISTRY_BIN):
        raise FileNotFoundError("docker-registry is not installed (apt-get install docker-registry)")
    workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / "storage"
    root.mkdir(exist_ok=True)
    port = port or free_port()
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False},
                "fields": {"service": name}},
        "storage": {
            "filesystem": {"rootdirectory": str(root)},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16),
                 "headers": {"X-Content-Type-Options": ["nosniff"]}},
    }
    if auth:
        config["auth"] = auth
    if tls:
        config["http"]["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
    cfg = workdir / "config.yml"
    cfg.write_text(json.dumps(config, indent=2))  # JSON is YAML
    log_path = workdir / "registry.log"
    logf = open(log_path, "ab")
    # Its own session: Ctrl-C on pytest must not reach it before the fixture stops it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    proc = subprocess.Popen([REGISTRY_BIN, "serve", str(cfg)], stdout=logf, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True, env=env,
                            preexec_fn=_die_with_parent)
    logf.close()
    reg = Registry(name=name, port=port, root=root, log_path=log_path, proc=proc,
                   scheme="https" if tls else "http")
    try:
        wait_http(f"{reg.url}/v2/", lambda s: s in (200, 401), proc=proc, what=f"registry {name}",
                  log=log_path, verify=not tls)
    except BaseException:
        reg.stop()
        raise
    return reg


# --------------------------------------------------------------------------- proxy

_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
        "transfer-encoding", "upgrade"}
_BLOB_RE = re.compile(r"^/v2/(?P<repo>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})$")
_MANIFEST_RE = re.compile(r"^/v2/(?P<repo>.+)/manifests/(?P<ref>[^/]+)$")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    status: int
    nbytes: int  # body bytes sent to the client
    headers: dict[str, str]
    t: float

    @property
    def blob(self) -> str | None:
        m = _BLOB_RE.match(self.path.split("?", 1)[0])
        return m.group("digest") if m else None

    @property
    def repo(self) -> str | None:
        p = self.path.split("?", 1)[0]
        m = _BLOB_RE.match(p) or _MANIFEST_RE.match(p)
        return m.group("repo") if m else None


@dataclass
class Fault:
    """What the proxy does to the requests it matches, ``times`` times (None: always).

    kind: "status" answers ``status`` without asking the registry; "corrupt" flips one
    byte of the body (same length, so only a digest check can notice); "cut" sends the
    headers and half the body, then drops the connection; "redirect" answers 307 to a
    blob-storage URL on the proxy, as registries backed by object storage do; "slow"
    sends the body at ``rate`` bytes per second; "drop" reads half the request body (an
    upload) and closes the connection without an answer.
    """

    kind: str
    digest: str | None = None  # match GET/HEAD of this blob
    repo: str | None = None  # or any blob/manifest request of this repository
    methods: tuple[str, ...] = ("GET",)
    times: int | None = None
    status: int = 503
    rate: int = 1 << 20
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if method not in self.methods:
            return False
        p = path.split("?", 1)[0]
        if self.digest is not None:
            m = _BLOB_RE.match(p)
            return bool(m and m.group("digest") == self.digest)
        if self.repo is not None:
            m = _BLOB_RE.match(p) or _MANIFEST_RE.match(p)
            return bool(m and m.group("repo") == self.repo)
        return True


class RegistryProxy:
    """An HTTP/1.1 proxy in front of a registry that records every request and injects
    faults. The tests' docker.io mirror points here, so every pull is counted."""

    def __init__(self, backend: Registry) -> None:
        self.backend = backend
        self._lock = threading.Lock()
        self._requests: list[Request] = []
        self._faults: list[Fault] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name="registry-proxy", daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ---- recording
    def mark(self) -> int:
        with self._lock:
            return len(self._requests)

    def since(self, mark: int = 0) -> list[Request]:
        with self._lock:
            return list(self._requests[mark:])

    def blob_gets(self, mark: int = 0, digest: str | None = None) -> list[Request]:
        """Blob GETs that sent bytes (200 or 206), optionally of one digest."""
        return [r for r in self.since(mark)
                if r.method == "GET" and r.blob and r.status in (200, 206) and r.nbytes > 0
                and (digest is None or r.blob == digest)]

    def _record(self, r: Request) -> None:
        with self._lock:
            self._requests.append(r)

    # ---- faults
    def add_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if f.matches(method, path) and (f.times is None or f.hits < f.times):
                    f.hits += 1
                    return f
        return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:
                self._serve()

            def do_HEAD(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def do_PUT(self) -> None:
                self._serve()

            def do_PATCH(self) -> None:
                self._serve()

            def do_DELETE(self) -> None:
                self._serve()

            def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
                self._done(status, 0 if self.command == "HEAD" else len(body))

            def _serve(self) -> None:
                path = self.path
                fault = proxy._take_fault(self.command, path)
                if fault is not None and fault.kind == "status":
                    err = {"code": "UNAVAILABLE", "message": "injected fault"}
                    body = json.dumps({"errors": [err]}).encode()
                    self._send(fault.status, {"Content-Type": "application/json"}, body)
                    return
                if fault is not None and fault.kind == "redirect":
                    target = f"http://{proxy.host}/_blobstore{path}?X-Signature={secrets.token_hex(8)}"
                    self._send(307, {"Location": target}, b"")
                    return
                backend_path = path
                strip_auth = False
                if path.startswith("/_blobstore/"):
                    # the object store of a redirect: serves the blob, wants no registry credentials
                    backend_path = path[len("/_blobstore"):].split("?", 1)[0]
                    strip_auth = True
                length = int(self.headers.get("Content-Length") or 0)
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    # a body of unknown length (a layer compressed while it uploads), relayed
                    # whole with its length
                    req_body = self._read_chunked(first_only=fault is not None and fault.kind == "drop")
                else:
                    req_body = self.rfile.read(length // 2 if fault is not None and fault.kind == "drop"
                                               else length) if length else None
                if fault is not None and fault.kind == "drop":
                    # half the request body read, then the connection is gone: no answer at all
                    self._done(0, 0)
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                if strip_auth:
                    headers.pop("Authorization", None)
                    headers.pop("authorization", None)
                conn = http.client.HTTPConnection("127.0.0.1", proxy.backend.port, timeout=120)
                try:
                    conn.request(self.command, backend_path, body=req_body, headers=headers)
                    resp = conn.getresponse()
                    self._relay(resp, fault)
                finally:
                    conn.close()

            def _read_chunked(self, first_only: bool) -> bytes:
                """RFC 9112 §7.1 chunked transfer coding, decoded."""
                body = bytearray()
                while True:
                    size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return bytes(body)
                    body += self.rfile.read(size)
                    self.rfile.readline()
                    if first_only:
                        return bytes(body)

            def _relay(self, resp: http.client.HTTPResponse, fault: Fault | None) -> None:
                rh = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP]
                clen = resp.getheader("Content-Length")
                if self.command == "HEAD" or clen is None or resp.status not in (200, 206) or fault is None:
                    if clen is None and self.command != "HEAD":
                        data = resp.read()
                        rh = [(k, v) for k, v in rh if k.lower() != "content-length"]
                        rh.append(("Content-Length", str(len(data))))
                        self._start(resp.status, rh)
                        self.wfile.write(data)
                        self._done(resp.status, len(data))
                        return
                    self._start(resp.status, rh)
                    sent = 0
                    if self.command != "HEAD":
                        while chunk := resp.read(1 << 16):
                            self.wfile.write(chunk)
                            sent += len(chunk)
                    self._done(resp.status, sent)
                    return
                # a blob body with a fault
                total = int(clen)
                self._start(resp.status, rh)
                sent = 0
                flipped = False
                while chunk := resp.read(1 << 16):
                    if fault.kind == "corrupt" and not flipped:
                        b = bytearray(chunk)
                        b[len(b) // 2] ^= 0xFF
                        chunk = bytes(b)
                        flipped = True
                    if fault.kind == "cut" and sent + len(chunk) > total // 2:
                        chunk = chunk[: max(0, total // 2 - sent)]
                        self.wfile.write(chunk)
                        sent += len(chunk)
                        self.wfile.flush()
                        self._done(resp.status, sent)
                        self.close_connection = True
                        with contextlib.suppress(OSError):
                            self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if fault.kind == "slow":
                        time.sleep(len(chunk) / fault.rate)
                    self.wfile.write(chunk)
                    sent += len(chunk)
                self._done(resp.status, sent)

            def _start(self, status: int, headers: list[tuple[str, str]]) -> None:
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()

            def _done(self, status: int, nbytes: int) -> None:
                proxy._record(Request(self.command, self.path, status, nbytes,
                                      {k.lower(): v for k, v in self.headers.items()}, time.monotonic()))

        return Handler


# --------------------------------------------------------------------------- token service


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService:
    """The registry token service of docs/spec/auth/token.md, on 127.0.0.1.

    Checks Basic credentials, grants per repository what ``grants`` allows, and signs an
    RS256 JWT whose ``x5c`` header carries the certificate the registry trusts
    (``auth.token.rootcertbundle``).
    """

    def __init__(self, workdir: Path, service: str, issuer: str,
                 users: dict[str, str], grants: Callable[[str | None, str], set[str]]) -> None:
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        workdir.mkdir(parents=True, exist_ok=True)
        self.service, self.issuer, self.users, self.grants = service, issuer, users, grants
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rootless test token signer")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                                  content_commitment=False, key_encipherment=False,
                                                  data_encipherment=False, key_agreement=False,
                                                  crl_sign=False, encipher_only=False, decipher_only=False),
                                    critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.cert_path = workdir / "token-signer.crt"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self._der = self.cert.public_bytes(serialization.Encoding.DER)
        self._lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, name="token-service", daemon=True).start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def sign(self, subject: str, access: list[dict[str, Any]], ttl: int = 300) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self._der).decode()]}
        claims = {"iss": self.issuer, "sub": subject, "aud": self.service, "exp": now + ttl,
                  "nbf": now - 10, "iat": now, "jti": secrets.token_hex(12), "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        sig = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(sig)}"

    def issue(self, user: str | None, password: str | None, scopes: list[str]) -> tuple[int, dict[str, Any]]:
        if user is not None and self.users.get(user) != password:
            return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}
        access = []
        for scope in scopes:
            # repository:NAME:ACTIONS (NAME may hold no colon; ACTIONS comma-separated)
            parts = scope.split(":")
            if len(parts) < 3 or parts[0] != "repository":
                continue
            name, wanted = ":".join(parts[1:-1]), set(parts[-1].split(","))
            allowed = sorted(wanted & self.grants(user, name))
            access.append({"type": "repository", "name": name, "actions": allowed})
        token = self.sign(user or "", access)
        return 200, {"token": token, "access_token": token, "expires_in": 300,
                     "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        svc = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="rootless test token service"')
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                q = urllib.parse.parse_qs(url.query)
                user = password = None
                auth = self.headers.get("Authorization", "")
                if auth.lower().startswith("basic "):
                    user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                self._answer(user, password, q.get("scope", []), q.get("service", [""])[0], "GET")

            def do_POST(self) -> None:
                # OAuth2 password grant (what containerd and Podman try first when asked to)
                n = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(n).decode())
                user = form.get("username", [None])[0]
                password = form.get("password", [None])[0]
                scopes = " ".join(form.get("scope", [])).split()
                self._answer(user, password, scopes, form.get("service", [""])[0], "POST")

            def _answer(self, user: str | None, password: str | None, scopes: list[str], service: str,
                        method: str) -> None:
                with svc._lock:
                    svc.requests.append({"method": method, "user": user, "scopes": scopes,
                                         "service": service})
                if service and service != svc.service:
                    err = {"code": "DENIED", "message": f"unknown service {service}"}
                    self._reply(400, {"errors": [err]})
                    return
                status, body = svc.issue(user, password, scopes)
                self._reply(status, body)

        return Handler


# --------------------------------------------------------------------------- the CLI runner


def rootless_command() -> list[str]:
    """The installed console script beside this interpreter, else ``python -m rootless``."""
    script = Path(sys.executable).parent / "rootless"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "rootless"]


class RootlessEnv:
    """Runs the `rootless` CLI as a subprocess with its own HOME, XDG dirs and config.

    ``rl("pull", "alpine")`` returns a CompletedProcess with text stdout/stderr; stdin is
    /dev/null (not a TTY) unless ``input`` is given. ``check=True`` raises with both
    streams in the message when the exit status is not 0.
    """

    def __init__(self, base: Path, config_text: str) -> None:
        self._paths(base, config_text)
        for d in (self.home, self.data_home, self.config_home, self.cache_home, self.runtime_dir):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.runtime_dir, 0o700)
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(config_text)

    def _paths(self, base: Path, config_text: str) -> None:
        self.base = base
        self.marker = secrets.token_hex(8)
        self.home = base / "home"
        self.data_home = base / "data"
        self.config_home = base / "config"
        self.cache_home = base / "cache"
        self.runtime_dir = base / "run"
        self.config_path = self.config_home / "rootless" / "config.toml"
        self.config_text = config_text
        self.command = rootless_command()
        self.calls: list[tuple[tuple[str, ...], int]] = []

    @property
    def store(self) -> Path:
        """The default store (``--root``): the user's data dir, per CLI.md."""
        return self.data_home / "rootless" / "storage"

    @property
    def runroot(self) -> Path:
        return self.runtime_dir / "rootless"

    @property
    def env(self) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"),
            "HOME": str(self.home),
            "USER": os.environ.get("USER", "rltest"),
            "LOGNAME": os.environ.get("LOGNAME", "rltest"),
            "LANG": "C.UTF-8",
            "XDG_DATA_HOME": str(self.data_home),
            "XDG_CONFIG_HOME": str(self.config_home),
            "XDG_CACHE_HOME": str(self.cache_home),
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
            "ROOTLESS_CONFIG": str(self.config_path),
            "SHELL": "/bin/sh",
            "ROOTLESS_TEST_MARKER": self.marker,
            "COLUMNS": "200",
        }
        return env

    def write_config(self, text: str) -> None:
        self.config_path.write_text(text)

    def __call__(self, *args: str, input: str | None = None,  # noqa: A002
                 env: Mapping[str, str | None] | None = None,
                 check: bool = False, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        """``env``: variables to add or change; a None value unsets one."""
        full_env = self.env
        if env:
            full_env.update({k: v for k, v in env.items() if v is not None})
            for k in [k for k, v in env.items() if v is None]:
                full_env.pop(k, None)
        argv, full_env = self.argv(args, full_env)
        proc = subprocess.Popen(argv, env=full_env, cwd=self.cwd, text=True,
                                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise AssertionError(f"rootless {' '.join(args)} did not finish in {timeout}s\n"
                                 f"--- stdout\n{out}\n--- stderr\n{err}") from None
        cp = subprocess.CompletedProcess([*self.command, *args], proc.returncode, out, err)
        self.calls.append((args, proc.returncode))
        if check and cp.returncode != 0:
            raise AssertionError(f"rootless {' '.join(args)} exited {cp.returncode}\n"
                                 f"--- stdout\n{out}\n--- stderr\n{err}")
        return cp

    @property
    def cwd(self) -> Path:
        return self.home

    def argv(self, args: tuple[str, ...], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        """The command line and environment that run ``rootless ARGS``."""
        return [*self.command, *args], env

    def popen(self, *args: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.Popen[str]:
        full_env = self.env
        if env:
            full_env.update(env)
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen([*self.command, *args], env=full_env, cwd=self.home, text=True, **kw)

    # ---- processes the runs left behind
    def processes(self) -> list[int]:
        """PIDs of live processes started by this environment (found by its marker)."""
        needle = f"ROOTLESS_TEST_MARKER={self.marker}".encode()
        out = []
        for p in Path("/proc").iterdir():
            if not p.name.isdigit() or int(p.name) == os.getpid():
                continue
            try:
                if needle in (p / "environ").read_bytes().split(b"\0"):
                    stat_ = (p / "stat").read_text()
                    if stat_.rsplit(")", 1)[1].split()[0] != "Z":
                        out.append(int(p.name))
            except OSError:
                continue
        return out

    def wait_no_processes(self, timeout: float = 10) -> list[int]:
        deadline = time.monotonic() + timeout
        left = self.processes()
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = self.processes()
        return left

    def kill_leftovers(self) -> list[int]:
        left = self.processes()
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        return left

    # ---- looking at the store from outside
    def images_json(self) -> list[dict[str, Any]]:
        cp = self("images", "--format", "json", check=True)
        return json.loads(cp.stdout or "[]")

    def inspect(self, name: str) -> dict[str, Any]:
        cp = self("image", "inspect", name, check=True)
        data = json.loads(cp.stdout)
        assert isinstance(data, list) and len(data) == 1, cp.stdout
        return data[0]

    def layer_dir(self, diff_id: str) -> Path:
        """Where the store keeps the unpacked layer ``diff_id`` (its file tree)."""
        from rootless.layout import Layout

        d = Layout(root=self.store, runroot=self.runroot).layer(diff_id)
        for sub in ("diff", "rootfs", "fs"):
            if (d / sub).is_dir():
                return d / sub
        return d

    def blob_files(self) -> list[Path]:
        d = self.store / "blobs" / "sha256"
        return sorted(p for p in d.iterdir() if p.is_file()) if d.is_dir() else []

    def check_blobs(self) -> list[str]:
        """Blob files whose bytes do not hash to their name (must be none: partial
        downloads belong in tmp/, never under their digest)."""
        bad = []
        for p in self.blob_files():
            if not re.fullmatch(r"[0-9a-f]{64}", p.name):
                bad.append(f"{p.name}: not a digest")
                continue
            h = hashlib.sha256()
            with open(p, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            if h.hexdigest() != p.name:
                bad.append(f"{p.name}: content hashes to {h.hexdigest()}")
        return bad


class OtherUserEnv(RootlessEnv):
    """The CLI run as another host user through ``sudo -n -u USER`` (scripts/setup-host allows
    the test user exactly that for its host-shape users), with a store under that user's home.

    newuidmap then checks that user's own /etc/subuid entry: a real single-ID or short-range
    user, not a simulation. Files are made by that user; the test user only reads them.
    """

    def __init__(self, user: str, config_text: str) -> None:
        import pwd

        pw = pwd.getpwnam(user)
        self.user, self.uid, self.gid = user, pw.pw_uid, pw.pw_gid
        self._paths(Path(pw.pw_dir) / f"rl-{secrets.token_hex(6)}", config_text)
        self.sudo("mkdir", "-m", "0700", "-p", str(self.home), str(self.data_home), str(self.config_path.parent),
                  str(self.cache_home), str(self.runtime_dir))
        self.write_config(config_text)

    def sudo(self, *argv: str, input: str | None = None) -> subprocess.CompletedProcess[str]:  # noqa: A002
        return subprocess.run(["sudo", "-n", "-u", self.user, "--", *argv], input=input, text=True,
                              capture_output=True, check=True, timeout=60)

    def write_config(self, text: str) -> None:
        self.sudo("tee", str(self.config_path), input=text)

    @property
    def env(self) -> dict[str, str]:
        env = super().env
        env["USER"] = env["LOGNAME"] = self.user
        return env

    def argv(self, args: tuple[str, ...], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        # sudo resets the environment (env_reset): hand it over through env(1)
        return (["sudo", "-n", "-u", self.user, "--", "env", "-i", "-C", str(self.home),
                 *(f"{k}={v}" for k, v in env.items()), *self.command, *args], {"PATH": env["PATH"]})

    @property
    def cwd(self) -> Path:
        return Path("/")  # the test user cannot enter the other user's home

    def close(self) -> None:
        """Remove the store (files of subordinate IDs: through the user's namespace) and the rest."""
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self("rm", "-a", "-f", timeout=60)
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self("unshare", "rm", "-rf", str(self.base), timeout=120)
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.sudo("rm", "-rf", str(self.base))


def rootless_config(mirror_host: str, insecure_hosts: list[str]) -> str:
    lines = [
        'unqualified-search = ["docker.io"]',
        "",
        '[registry."docker.io"]',
        f'mirrors = ["{mirror_host}"]',
    ]
    for h in [mirror_host, *insecure_hosts]:
        lines += ["", f'[registry."{h}"]', "insecure = true"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- assertions


def error_lines(stderr: str) -> list[str]:
    """stderr without warnings and progress: what a user reads as the error report."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("Warning:")]


def assert_clean_error(cp: subprocess.CompletedProcess[str], code: int = 125, *needles: str) -> str:
    """The CLI failed the way DESIGN.md says: exit ``code``, ``Error: <one line>`` and at
    most a ``Hint:`` line, no traceback. Returns the error line."""
    __tracebackhide__ = True
    report = f"exit {cp.returncode}\n--- stdout\n{cp.stdout}\n--- stderr\n{cp.stderr}"
    assert cp.returncode == code, f"expected exit {code}: {report}"
    assert "Traceback" not in cp.stderr and "Traceback" not in cp.stdout, f"traceback shown: {report}"
    lines = error_lines(cp.stderr)
    assert lines and lines[0].startswith("Error: "), f"no 'Error: ' line first: {report}"
    assert len(lines) <= 2 and all(ln.startswith("Hint: ") for ln in lines[1:]), \
        f"error report is more than 'Error:' + 'Hint:': {report}"
    for n in needles:
        assert n.lower() in lines[0].lower(), f"{n!r} not named in the error line: {report}"
    return lines[0]


def iter_tree(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            yield Path(dirpath) / n


@dataclass
class AuthRegistries:
    basic: Registry
    token: Registry
    token_service: TokenService
    users: dict[str, str] = field(default_factory=dict)


class Tty:
    """A command on a real terminal: a private tmux server, keys typed with send-keys,
    the screen read with capture-pane."""

    def __init__(self, env: RootlessEnv, argv: list[str], width: int = 160, height: int = 40) -> None:
        import shlex

        if not shutil.which("tmux"):
            raise FileNotFoundError("tmux is not installed (apt-get install tmux)")
        self.env = env
        self.sock = str(env.base / f"tmux-{secrets.token_hex(4)}.sock")
        self.done = env.base / f"tty-{secrets.token_hex(4)}.status"
        cmd = f"{shlex.join(argv)}; echo $? > {shlex.quote(str(self.done))}; sleep 600"
        subprocess.run(["tmux", "-S", self.sock, "-f", "/dev/null", "new-session", "-d", "-x", str(width),
                        "-y", str(height), cmd], env=env.env, cwd=env.home, check=True, timeout=20)

    def screen(self) -> str:
        return subprocess.run(["tmux", "-S", self.sock, "capture-pane", "-p", "-J", "-S", "-200"],
                              capture_output=True, text=True, timeout=20).stdout

    def send(self, *keys: str) -> None:
        subprocess.run(["tmux", "-S", self.sock, "send-keys", *keys], check=True, timeout=20)

    def type_line(self, text: str) -> None:
        self.send("-l", text)
        self.send("Enter")

    def wait_for(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not on the screen after {timeout}s:\n{screen}")

    def wait_exit(self, timeout: float = 120) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.done.exists() and self.done.read_text().strip():
                return int(self.done.read_text())
            time.sleep(0.1)
        raise AssertionError(f"command still running after {timeout}s:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.sock, "kill-server"], capture_output=True, timeout=20)
