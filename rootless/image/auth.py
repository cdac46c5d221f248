"""Registry authentication as an httpx.Auth flow: anonymous → bearer token → basic.

The protocol is Docker's token authentication (distribution docs "Token
Authentication Specification", adopted by the OCI distribution spec): a request
refused with 401 carries `WWW-Authenticate: Bearer realm=...,service=...,scope=...`;
the client asks the realm for a token for the repository scope it needs
(`repository:NAME:pull`), with HTTP basic credentials if it has any, and sends it
as `Authorization: Bearer`. Registries without a token server ask for Basic.

One RegistryAuth serves one RegistryClient, shared by its download threads: what
it learns (which hosts want which scheme, tokens per scope) sits behind a lock.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import httpx

from rootless.errors import AuthError, RegistryError

# Tokens are used until a little before they expire, so a request does not reach
# the registry with a token that lapses in flight.
_EXPIRY_MARGIN = 10.0
# The spec: "if not specified, the token should be assumed to expire after 60 seconds".
_DEFAULT_EXPIRES_IN = 60

SCOPE_EXTENSION = "rootless.scope"  # httpx request extension: the token scope(s), space-separated
_REPO_PATH_RE = re.compile(r"^/v2/(.+)/(?:manifests|blobs|tags)/[^/]+$")
_SCHEME_RE = re.compile(r"^([!#$%&'*+.^_`|~0-9A-Za-z-]+)(?:[ \t]+(.*))?$", re.S)
_PARAM_RE = re.compile(r"^([!#$%&'*+.^_`|~0-9A-Za-z-]+)[ \t]*=[ \t]*(.*)$", re.S)
_TOKEN68_RE = re.compile(r"[A-Za-z0-9._~+/-]+=*")


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower-case: "bearer", "basic", ...
    params: dict[str, str] = field(default_factory=dict)


class TokenServerError(RegistryError):
    """The token server failed in a way worth retrying (5xx, 429)."""

    def __init__(self, message: str, hint: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, hint)
        self.retry_after = retry_after


def _split_elements(s: str) -> list[str]:
    """Split at commas outside quoted strings (RFC 9110 §5.6.1 lists, §5.6.4 quoting)."""
    out: list[str] = []
    buf: list[str] = []
    quoted = escaped = False
    for ch in s:
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            out.append("".join(buf).strip())
            buf = []
            continue
        buf.append(ch)
    out.append("".join(buf).strip())
    return [e for e in out if e]


def _unquote(v: str) -> str:
    v = v.strip()
    if not v.startswith('"'):
        return v
    buf: list[str] = []
    i = 1
    while i < len(v) and v[i] != '"':
        if v[i] == "\\" and i + 1 < len(v):
            i += 1
        buf.append(v[i])
        i += 1
    return "".join(buf)


def parse_www_authenticate(values: str | list[str]) -> list[Challenge]:
    """RFC 9110 §11.6.1 challenges, from one header value or several.

    A header may hold several challenges, each with comma-separated params whose
    quoted values may contain commas (scope="repository:a:pull,push") and escapes.
    An element that starts with a token followed by white space (not "=") opens the
    next challenge; a token68 (e.g. "Negotiate abc==") is kept under the key "".
    """
    if isinstance(values, list):
        return [c for v in values for c in parse_www_authenticate(v)]
    challenges: list[Challenge] = []
    for element in _split_elements(values):
        m = _SCHEME_RE.match(element)
        if m and not (m.group(2) or "").startswith("="):
            challenges.append(Challenge(m.group(1).lower(), {}))
            element = m.group(2) or ""
            if not element:
                continue
            if _TOKEN68_RE.fullmatch(element):
                challenges[-1].params[""] = element
                continue
        if not challenges:
            continue  # a param before any scheme: malformed, ignore it
        p = _PARAM_RE.match(element)
        if p:
            challenges[-1].params[p.group(1).lower()] = _unquote(p.group(2))
    return challenges


def scope_for_path(path: str) -> str | None:
    """`repository:NAME:pull` for /v2/NAME/{manifests,blobs,tags}/..., None for /v2/."""
    m = _REPO_PATH_RE.match(path)
    return f"repository:{m.group(1)}:pull" if m else None


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def registry_message(response: httpx.Response) -> str:
    """The first error of an OCI error body ({"errors": [{"code", "message"}]}), if any."""
    try:
        body = json.loads(response.content or b"{}")
    except ValueError:
        return ""
    if isinstance(body, dict):
        errs = body.get("errors")
        if isinstance(errs, list) and errs and isinstance(errs[0], dict):
            code, msg = errs[0].get("code"), errs[0].get("message")
            return ": ".join(str(x) for x in (code, msg) if x)
        for key in ("details", "message", "error"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return ""


def retry_after(response: httpx.Response) -> float | None:
    """Retry-After as seconds (RFC 9110 §10.2.3: delta-seconds or an HTTP date)."""
    v = response.headers.get("retry-after")
    if not v:
        return None
    v = v.strip()
    if v.isdigit():
        return float(v)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(v)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class RegistryAuth(httpx.Auth):
    """``credentials(host)`` gives (user, password) or None for an endpoint host
    ("registry-1.docker.io", "localhost:5000"); ``display_name(host)`` is how the
    user calls that registry ("docker.io"), for messages and hints."""

    def __init__(self, credentials: Callable[[str], tuple[str, str] | None],
                 display_name: Callable[[str], str] = lambda h: h,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._credentials = credentials
        self._display = display_name
        self._clock = clock
        self._lock = threading.Lock()
        self._creds_cache: dict[str, tuple[str, str] | None] = {}
        self._schemes: dict[str, Challenge] = {}
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}

    # --- shared state --------------------------------------------------------
    def credentials_for(self, host: str) -> tuple[str, str] | None:
        with self._lock:
            if host in self._creds_cache:
                return self._creds_cache[host]
        creds = self._credentials(host)
        with self._lock:
            self._creds_cache[host] = creds
        return creds

    def _token_key(self, ch: Challenge, scope: str | None) -> tuple[str, str, str]:
        return (ch.params.get("realm", ""), ch.params.get("service", ""), scope or "")

    def _cached_token(self, ch: Challenge, scope: str | None) -> str | None:
        key = self._token_key(ch, scope)
        with self._lock:
            hit = self._tokens.get(key)
            if hit and hit[1] > self._clock():
                return hit[0]
            self._tokens.pop(key, None)
        return None

    # --- the flow ------------------------------------------------------------
    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        host = request.url.netloc.decode("ascii")
        # A push names its scope itself ("repository:NAME:pull,push", plus
        # "repository:FROM:pull" for a cross-repository mount): upload URLs do not say it.
        scope = request.extensions.get(SCOPE_EXTENSION) or scope_for_path(request.url.path)
        with self._lock:
            known = self._schemes.get(host)
        # Once a host has challenged us, authenticate up front: a pull of N blobs
        # then costs one token request, not N extra 401 round trips.
        if known is not None and known.scheme == "bearer":
            token = self._cached_token(known, scope)
            if token is None:
                token = yield from self._fetch_token(host, known, scope, request.url.scheme)
            request.headers["Authorization"] = f"Bearer {token}"
        elif known is not None and known.scheme == "basic":
            creds = self.credentials_for(host)
            if creds:
                request.headers["Authorization"] = _basic(*creds)

        response = yield request
        if response.status_code != 401:
            return
        challenges = parse_www_authenticate(response.headers.get_list("www-authenticate"))
        challenge = next((c for c in challenges if c.scheme == "bearer" and c.params.get("realm")), None) \
            or next((c for c in challenges if c.scheme == "basic"), None)
        if challenge is None:
            return  # nothing we can answer; the caller reports the 401
        with self._lock:
            self._schemes[host] = challenge
        if challenge.scheme == "bearer":
            with self._lock:
                self._tokens.pop(self._token_key(challenge, scope), None)
            token = yield from self._fetch_token(host, challenge, scope, request.url.scheme)
            request.headers["Authorization"] = f"Bearer {token}"
        else:
            creds = self.credentials_for(host)
            if creds is None:
                name = self._display(host)
                raise AuthError(f"authentication to {name} required", f"rootless login {name}")
            request.headers["Authorization"] = _basic(*creds)
        response = yield request
        if response.status_code == 401:
            if challenge.scheme == "bearer":
                with self._lock:
                    self._tokens.pop(self._token_key(challenge, scope), None)
            response.read()
            raise self._refused(host, scope, registry_message(response))

    def _refused(self, host: str, scope: str | None, detail: str = "") -> AuthError:
        name = self._display(host)
        creds = self.credentials_for(host)
        msg = f"authentication to {name} refused"
        if scope:
            _, repo, actions = scope.split()[0].split(":", 2)
            who = f"user {creds[0]}" if creds else "anonymous users"
            verb = "push to" if "push" in actions.split(",") else "pull"
            msg += f": {name}/{repo} does not exist or {who} may not {verb} it"
        if detail:
            msg += f" ({detail})"
        return AuthError(msg, f"rootless login {name}")

    def _fetch_token(self, host: str, ch: Challenge, scope: str | None, scheme: str
                     ) -> Generator[httpx.Request, httpx.Response, str]:
        realm = ch.params.get("realm", "")
        if not realm.lower().startswith(("https://", "http://")):
            raise RegistryError(f"registry {self._display(host)} names an invalid token realm {realm!r}")
        params: list[tuple[str, str | int | float | bool | None]] = []
        if ch.params.get("service"):
            params.append(("service", ch.params["service"]))
        for one in (scope or "").split():
            params.append(("scope", one))
        # A registry may ask for more than the pull scope we derived (e.g. a
        # different repository name after a rewrite): ask for both.
        if ch.params.get("scope") and ch.params["scope"] not in (scope or "").split():
            params.append(("scope", ch.params["scope"]))
        req = httpx.Request("GET", realm, params=params)
        creds = self.credentials_for(host)
        if creds:
            if req.url.scheme != "https" and scheme == "https":
                raise AuthError(f"registry {self._display(host)} names a plain-HTTP token server {realm}; "
                                "refusing to send credentials there",
                                "ask the registry's operator to serve the token realm over HTTPS")
            req.headers["Authorization"] = _basic(*creds)
        response = yield req
        response.read()
        name = self._display(host)
        if response.status_code in (401, 403):
            if creds:
                raise AuthError(f"authentication to {name} refused: the token server "
                                f"{response.url.host} rejected the credentials of user {creds[0]}",
                                f"rootless login {name}")
            raise self._refused(host, scope, registry_message(response))
        if response.status_code == 429 or response.status_code >= 500:
            raise TokenServerError(f"token server {response.url.host} for {name} failed: "
                                   f"{response.status_code} {response.reason_phrase}",
                                   retry_after=retry_after(response))
        if response.status_code != 200:
            detail = registry_message(response)
            raise RegistryError(f"token server {response.url.host} for {name} answered "
                                f"{response.status_code} {response.reason_phrase}"
                                + (f": {detail}" if detail else ""))
        try:
            body = json.loads(response.content)
            token = body.get("token") or body.get("access_token")
            expires_in = body.get("expires_in") or _DEFAULT_EXPIRES_IN
        except (ValueError, AttributeError):
            token, expires_in = None, 0
        if not isinstance(token, str) or not token:
            raise RegistryError(f"token server {response.url.host} for {name} sent no token")
        if not isinstance(expires_in, int | float) or expires_in <= 0:
            expires_in = _DEFAULT_EXPIRES_IN
        expiry = self._clock() + float(expires_in) - min(_EXPIRY_MARGIN, float(expires_in) / 2)
        with self._lock:
            self._tokens[self._token_key(ch, scope)] = (token, expiry)
        return token
