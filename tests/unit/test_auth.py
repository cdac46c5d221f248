from __future__ import annotations

import base64
import json
from collections.abc import Callable

import httpx
import pytest

from rootless.errors import AuthError, RegistryError
from rootless.image.auth import (
    Challenge,
    RegistryAuth,
    TokenServerError,
    parse_www_authenticate,
    scope_for_path,
)

REALM = "https://auth.example.com/token"
CHALLENGE = f'Bearer realm="{REALM}",service="registry.example.com"'


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class TokenRegistry:
    """registry.example.com behind a token server; tokens name their scope."""

    def __init__(self, users: dict[str, str] | None = None, token_field: str = "token",
                 expires_in: int | None = 300, challenge_scope: bool = True) -> None:
        self.users = users or {}
        self.token_field = token_field
        self.expires_in = expires_in
        self.challenge_scope = challenge_scope
        self.token_requests: list[httpx.Request] = []
        self.registry_auth: list[str | None] = []  # Authorization as each request carried it
        self.private = {"private/app"}
        self.revoked: set[str] = set()
        self.issued = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example.com":
            return self.token(request)
        got = request.headers.get("authorization", "")
        self.registry_auth.append(got or None)
        path = request.url.path
        repo = path[len("/v2/"):].rsplit("/", 2)[0] if path != "/v2/" else None
        want = f"repository:{repo}:pull" if repo else ""
        token = got.removeprefix("Bearer ")
        if token not in self.revoked and (token.startswith(f"tok[{want}]#")
                                          or (not repo and token.startswith("tok["))):
            return httpx.Response(200, json={"ok": True})
        ch = CHALLENGE + (f',scope="{want}"' if repo and self.challenge_scope else "")
        return httpx.Response(401, headers={"WWW-Authenticate": ch},
                              json={"errors": [{"code": "UNAUTHORIZED",
                                                "message": "authentication required"}]})

    def token(self, request: httpx.Request) -> httpx.Response:
        self.token_requests.append(request)
        q = request.url.params
        assert q.get("service") == "registry.example.com"
        scopes = q.get_list("scope")
        auth = request.headers.get("authorization")
        user = None
        if auth:
            user, _, pw = base64.b64decode(auth.split()[1]).decode().partition(":")
            if self.users.get(user) != pw:
                return httpx.Response(401, json={"details": "incorrect username or password"})
        # Anonymous users get a token that is useless for private repositories, as Docker Hub does.
        scope = scopes[0] if scopes else ""
        if scope and scope.split(":")[1] in self.private and user is None:
            scope = ""
        self.issued += 1
        body: dict[str, object] = {self.token_field: f"tok[{scope}]#{self.issued}"}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return httpx.Response(200, json=body)


def client(handler: Callable[[httpx.Request], httpx.Response],
           creds: tuple[str, str] | None = None, clock: Callable[[], float] | None = None) -> httpx.Client:
    kw = {"clock": clock} if clock else {}
    auth = RegistryAuth(lambda host: creds, **kw)  # type: ignore[arg-type]
    return httpx.Client(transport=httpx.MockTransport(handler), auth=auth)


URL = "https://registry.example.com/v2/library/alpine/manifests/latest"
BLOB = "https://registry.example.com/v2/library/alpine/blobs/sha256:" + "a" * 64


def test_parse_www_authenticate_quoted_commas() -> None:
    h = 'Bearer realm="https://a/token",service="reg",scope="repository:x/y:pull,push",error="insufficient_scope"'
    assert parse_www_authenticate(h) == [Challenge("bearer", {
        "realm": "https://a/token", "service": "reg", "scope": "repository:x/y:pull,push",
        "error": "insufficient_scope"})]


def test_parse_www_authenticate_several_challenges() -> None:
    got = parse_www_authenticate(['Basic realm="a, b", Bearer realm = "https://t" , service=svc',
                                  'Negotiate abc==', 'Basic realm="q\\"x"'])
    assert got == [Challenge("basic", {"realm": "a, b"}),
                   Challenge("bearer", {"realm": "https://t", "service": "svc"}),
                   Challenge("negotiate", {"": "abc=="}),
                   Challenge("basic", {"realm": 'q"x'})]
    assert parse_www_authenticate("") == [] and parse_www_authenticate("BASIC") == [Challenge("basic", {})]


def test_scope_for_path() -> None:
    assert scope_for_path("/v2/library/alpine/manifests/latest") == "repository:library/alpine:pull"
    assert scope_for_path("/v2/a/blobs/b/blobs/sha256:" + "0" * 64) == "repository:a/blobs/b:pull"
    assert scope_for_path("/v2/x/tags/list") == "repository:x:pull"
    assert scope_for_path("/v2/") is None


def test_bearer_anonymous_with_scope_and_cache() -> None:
    reg = TokenRegistry()
    with client(reg) as c:
        assert c.get(URL).status_code == 200
        assert len(reg.token_requests) == 1
        t = reg.token_requests[0]
        assert t.url.params.get_list("scope") == ["repository:library/alpine:pull"]
        assert "authorization" not in t.headers
        # First request was anonymous, then retried with the token.
        assert reg.registry_auth == [None, "Bearer tok[repository:library/alpine:pull]#1"]
        # The same scope reuses the token, up front: no 401 round trip, no new token.
        for _ in range(3):
            assert c.get(BLOB).status_code == 200
        assert len(reg.token_requests) == 1
        assert len(reg.registry_auth) == 5
        # Another repository is another scope: one token request, sent up front.
        assert c.get("https://registry.example.com/v2/other/manifests/1").status_code == 200
        assert len(reg.token_requests) == 2 and len(reg.registry_auth) == 6


def test_token_expiry_and_access_token_field() -> None:
    now = [1000.0]
    reg = TokenRegistry(token_field="access_token", expires_in=None)  # spec default: 60 s
    with client(reg, clock=lambda: now[0]) as c:
        assert c.get(URL).status_code == 200
        now[0] += 30
        assert c.get(URL).status_code == 200
        assert len(reg.token_requests) == 1
        now[0] += 30  # within the safety margin of expiry
        assert c.get(URL).status_code == 200
        assert len(reg.token_requests) == 2


def test_bearer_with_credentials() -> None:
    reg = TokenRegistry(users={"alice": "s3cret"})
    with client(reg, ("alice", "s3cret")) as c:
        assert c.get("https://registry.example.com/v2/private/app/manifests/1").status_code == 200
    assert reg.token_requests[0].headers["authorization"] == basic("alice", "s3cret")


def test_bearer_scope_from_challenge_is_added_when_different() -> None:
    seen: list[list[str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example.com":
            seen.append(request.url.params.get_list("scope"))
            return httpx.Response(200, json={"token": "t"})
        if request.headers.get("authorization") == "Bearer t":
            return httpx.Response(200)
        return httpx.Response(401, headers={"WWW-Authenticate":
                                            f'{CHALLENGE},scope="repository:elsewhere/x:pull"'})

    with client(handler) as c:
        assert c.get(URL).status_code == 200
    assert seen == [["repository:library/alpine:pull", "repository:elsewhere/x:pull"]]


def test_bearer_refused_credentials() -> None:
    reg = TokenRegistry(users={"alice": "right"})
    with client(reg, ("alice", "wrong")) as c, pytest.raises(AuthError) as e:
        c.get(URL)
    assert e.value.message.startswith("authentication to registry.example.com refused")
    assert "alice" in e.value.message
    assert e.value.hint == "rootless login registry.example.com"


def test_bearer_anonymous_denied_on_private_repository() -> None:
    reg = TokenRegistry()
    with client(reg) as c, pytest.raises(AuthError) as e:
        c.get("https://registry.example.com/v2/private/app/manifests/1")
    assert e.value.message.startswith("authentication to registry.example.com refused: "
                                      "registry.example.com/private/app does not exist or anonymous users")
    assert e.value.hint == "rootless login registry.example.com"


def test_stale_cached_token_is_refreshed() -> None:
    reg = TokenRegistry()
    with client(reg) as c:
        c.get(URL)
        reg.revoked.add("tok[repository:library/alpine:pull]#1")
        assert c.get(URL).status_code == 200
        assert reg.registry_auth[2:] == ["Bearer tok[repository:library/alpine:pull]#1",
                                         "Bearer tok[repository:library/alpine:pull]#2"]
        reg.private.add("library/alpine")  # now anonymous tokens do not reach it
        reg.revoked.add("tok[repository:library/alpine:pull]#2")
        with pytest.raises(AuthError):
            c.get(URL)
        # cached token (401) → fresh token (401) → refused
        assert len(reg.token_requests) == 3


def basic_registry(users: dict[str, str]) -> Callable[[httpx.Request], httpx.Response]:
    allowed = {basic(u, p) for u, p in users.items()}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") in allowed:
            return httpx.Response(200)
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="Registry Realm"'})

    return handler


def test_basic_flow_and_preemptive_reuse() -> None:
    calls: list[str | None] = []
    inner = basic_registry({"bob": "pw"})

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers.get("authorization"))
        return inner(request)

    with client(handler, ("bob", "pw")) as c:
        assert c.get(URL).status_code == 200
        assert calls == [None, basic("bob", "pw")]
        assert c.get(BLOB).status_code == 200
        assert calls[2:] == [basic("bob", "pw")]


def test_basic_refused_and_missing_credentials() -> None:
    with client(basic_registry({"bob": "pw"}), ("bob", "nope")) as c, pytest.raises(AuthError) as e:
        c.get(URL)
    assert e.value.message.startswith("authentication to registry.example.com refused")
    assert e.value.hint == "rootless login registry.example.com"
    with client(basic_registry({"bob": "pw"})) as c, pytest.raises(AuthError) as e2:
        c.get(URL)
    assert e2.value.message == "authentication to registry.example.com required"


def test_401_without_challenge_is_returned() -> None:
    with client(lambda r: httpx.Response(401)) as c:
        assert c.get(URL).status_code == 401


def test_token_server_failures() -> None:
    def handler(status: int) -> Callable[[httpx.Request], httpx.Response]:
        def h(request: httpx.Request) -> httpx.Response:
            if request.url.host == "auth.example.com":
                return httpx.Response(status, headers={"Retry-After": "2"}, json={})
            return httpx.Response(401, headers={"WWW-Authenticate": CHALLENGE})
        return h

    with client(handler(503)) as c, pytest.raises(TokenServerError) as e:
        c.get(URL)
    assert e.value.retry_after == 2.0
    with client(handler(400)) as c, pytest.raises(RegistryError, match="answered 400"):
        c.get(URL)

    def no_token(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example.com":
            return httpx.Response(200, content=json.dumps({"nothing": 1}).encode())
        return httpx.Response(401, headers={"WWW-Authenticate": CHALLENGE})

    with client(no_token) as c, pytest.raises(RegistryError, match="sent no token"):
        c.get(URL)


def test_credentials_never_sent_to_plain_http_realm_of_https_registry() -> None:
    sent: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example.com":
            sent.append(request.headers.get("authorization"))
            return httpx.Response(200, json={"token": "t"})
        if request.headers.get("authorization") == "Bearer t":
            return httpx.Response(200)
        return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="http://auth.example.com/t"'})

    with client(handler, ("alice", "pw")) as c, pytest.raises(AuthError, match="plain-HTTP token server"):
        c.get(URL)
    assert sent == []
    # Anonymous token requests carry no secret: allowed.
    with client(handler) as c:
        assert c.get(URL).status_code == 200
    assert sent == [None]
