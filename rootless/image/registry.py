"""OCI distribution API v2 client: manifests and blobs, over mirrors, with retries.

One RegistryClient talks to one registry as named in a reference ("docker.io",
"localhost:5000") and to its configured mirrors, which are tried first, in order
(containers-registries.conf(5) semantics: a mirror "host/prefix" serves repository
NAME as prefix/NAME). Content is checked against its digest before anyone sees it:
manifests here, blobs by the store's writer as they stream.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol, TypeVar

import httpx

from rootless.context import Context
from rootless.errors import AuthError, DigestMismatchError, NotFoundError, RegistryError, RootlessError, StorageError
from rootless.image import credentials as creds_store
from rootless.image.auth import RegistryAuth, TokenServerError, registry_message, retry_after
from rootless.image.manifest import ALL_MANIFEST_TYPES, check_digest, sha256_digest, sniff_media_type

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
USER_AGENT = "rootless/0.1"

# containers/image refuses manifests over 4 MiB: real ones are a few KiB, and the
# limit keeps a hostile registry from making us buffer without bound.
MAX_MANIFEST_SIZE = 4 << 20
MAX_CONFIG_SIZE = 4 << 20
_MAX_RETRY_AFTER = 60.0
_MAX_BACKOFF = 30.0

T = TypeVar("T")


class BlobSink(Protocol):
    """What fetch_blob needs of storage.blobs.BlobWriter."""

    @property
    def offset(self) -> int: ...

    @property
    def done(self) -> bool: ...

    def reset(self) -> None: ...

    def write(self, data: bytes) -> Any: ...


@dataclass(frozen=True)
class Endpoint:
    host: str  # where the API answers: "registry-1.docker.io", "mirror.local:5000"
    prefix: str = ""  # a mirror's namespace, prepended to repository names
    insecure: bool = False  # plain HTTP
    mirror: bool = False
    name: str = ""  # how the user calls it ("docker.io"); defaults to host

    @property
    def scheme(self) -> str:
        return "http" if self.insecure else "https"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def display(self) -> str:
        return self.name or self.host

    def repository(self, repository: str) -> str:
        return f"{self.prefix}/{repository}" if self.prefix else repository

    def __str__(self) -> str:
        return f"{self.display}/{self.prefix}" if self.prefix else self.display


def api_host(host: str) -> str:
    """Docker Hub's API is not served at the name images carry."""
    return DOCKER_HUB_API if host in (DOCKER_HUB, "index.docker.io") else host


def endpoints_for(ctx: Context, registry: str) -> tuple[Endpoint, ...]:
    """Mirrors in configured order, then the registry itself. A mirror's insecure flag
    comes from its own [registry."mirror"] entry, never from the registry it mirrors."""
    config = ctx.config
    out: list[Endpoint] = []
    for m in config.registry(registry).mirrors:
        host, _, prefix = m.partition("/")
        entry = config.registries.get(m) or config.registry(host)
        out.append(Endpoint(api_host(host), prefix.strip("/"), entry.insecure, mirror=True, name=host))
    out.append(Endpoint(api_host(registry), "", config.registry(registry).insecure, name=registry))
    return tuple(out)


class _Transient(Exception):
    """A failure worth retrying; ``error`` is what to raise when the retries run out."""

    def __init__(self, error: RootlessError, retry_after: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after


class _MemoryWriter:
    def __init__(self, limit: int) -> None:
        self.buf = bytearray()
        self.limit = limit
        self.done = False

    @property
    def offset(self) -> int:
        return len(self.buf)

    def reset(self) -> None:
        self.buf.clear()

    def write(self, data: bytes) -> None:
        if len(self.buf) + len(data) > self.limit:
            raise RegistryError(f"blob larger than {self.limit >> 20} MiB where a small one was expected")
        self.buf += data


def _config_hint(err: RootlessError) -> str | None:
    """The hint of a mirror's failure worth showing with the warning that moves on: the one
    naming a config change (a plain-HTTP mirror needs insecure = true), as a direct pull says."""
    return err.hint if err.hint and "insecure = true" in err.hint else None


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _content_range_start(response: httpx.Response) -> int | None:
    v = response.headers.get("content-range", "")
    unit, _, rest = v.partition(" ")
    if unit.strip().lower() != "bytes":
        return None
    start = rest.partition("-")[0].strip()
    return int(start) if start.isdigit() else None


class RegistryClient:
    """Thread-safe: one httpx.Client and one RegistryAuth shared by download threads.

    ``transport`` and ``sleep`` exist for tests (httpx.MockTransport, no real waits);
    ``credentials`` replaces the credential store lookup (endpoint host → user, password).
    """

    def __init__(self, ctx: Context, registry: str, *,
                 transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 tries: int = 4, base_delay: float = 0.5,
                 credentials: Callable[[str], tuple[str, str] | None] | None = None,
                 timeout: httpx.Timeout | None = None, tls_verify: bool = True) -> None:
        self.ctx = ctx
        self.registry = registry
        self.endpoints = endpoints_for(ctx, registry)
        self._sleep = sleep
        self._tries = max(1, tries)
        self._base_delay = base_delay
        self._names = {ep.host: ep.display for ep in self.endpoints}
        self._lock = threading.Lock()
        self._blob_endpoint: dict[str, Endpoint] = {}
        lookup = credentials or (lambda host: creds_store.get(ctx.layout, self._names.get(host, host)))
        self._auth = RegistryAuth(lookup, display_name=lambda h: self._names.get(h, h))
        pool = max(ctx.config.max_parallel_downloads, 6) + 2
        self._client = httpx.Client(
            auth=self._auth, transport=transport, http2=False, follow_redirects=False, verify=tls_verify,
            timeout=timeout or httpx.Timeout(60.0, connect=15.0, pool=600.0),
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
            headers={"User-Agent": USER_AGENT})

    # --- lifecycle -------------------------------------------------------------
    def close(self) -> None:
        self._client.close()

    def settle_scheme(self) -> None:
        """For --tls-verify=false (containers/image's insecure registry): HTTPS is tried first,
        without checking the certificate (the client was made with tls_verify=False); a
        registry that does not speak TLS is then spoken to in plain HTTP."""
        ep = self.primary
        if ep.insecure:
            return
        try:
            self._client.get(f"{ep.base_url}/v2/", auth=None).read()
        except httpx.ConnectError as e:
            if any(isinstance(c, ssl.SSLError) for c in _causes(e)):
                self.ctx.log.debug(f"{ep.display} does not speak TLS: plain HTTP ({e})")
                self.endpoints = (*self.endpoints[:-1], dataclasses.replace(ep, insecure=True))
        except httpx.HTTPError:
            pass  # the request that needs the registry says what is wrong

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def primary(self) -> Endpoint:
        return self.endpoints[-1]

    def _name(self, repository: str, ref: str | None = None) -> str:
        base = f"{self.registry}/{repository}"
        if ref is None:
            return base
        return f"{base}@{ref}" if ref.startswith("sha256:") else f"{base}:{ref}"

    @staticmethod
    def _via(ep: Endpoint) -> str:
        return f" from mirror {ep}" if ep.mirror else ""

    # --- errors ----------------------------------------------------------------
    def _network_error(self, ep: Endpoint, exc: httpx.RequestError, push: bool = False) -> RegistryError:
        """The one-line error for a failed request; ``push``: the hints a push needs (a push
        goes to the registry itself, never to a mirror, and has --tls-verify)."""
        target = f"registry {ep.display}"
        try:
            host = exc.request.url.netloc.decode("ascii")
        except RuntimeError:
            host = ep.host
        if host != ep.host:  # a token server or the blob storage a registry redirects to
            target = f"{host} (for registry {ep.display})"
        text = str(exc)
        low = text.lower()
        conf_hint = (f'mirrors are tried first when set under [registry."{self.registry}"] mirrors in the '
                     "config file (rootless.conf(5)); otherwise check the registry and the network")
        if push:
            conf_hint = (f"check that {ep.display} is up and that nothing between us (a proxy's body size "
                         "or time limit) cuts uploads, then push again")
        if any(isinstance(c, ssl.SSLError) for c in _causes(exc)) or "ssl" in low or "certificate" in low:
            reason = text.split("] ", 1)[-1].split(" (_ssl", 1)[0] or type(exc).__name__
            if "certificate" in low and push:
                hint = ("install the registry's CA certificate (or point SSL_CERT_FILE at it), or push "
                        "with --tls-verify=false to skip the check")
            elif "certificate" in low:
                hint = (f"install the registry's CA certificate (or point SSL_CERT_FILE at it); for a "
                        f'plain-HTTP registry set insecure = true under [registry."{ep.display}"] '
                        "in rootless.conf(5)")
            elif push:
                hint = f"if {ep.display} serves plain HTTP, push with --tls-verify=false"
            else:
                hint = (f"if {ep.display} serves plain HTTP, set insecure = true under "
                        f'[registry."{ep.display}"] '
                        "in the config file (rootless.conf(5))")
            return RegistryError(f"TLS handshake with {target} failed: {reason}", hint)
        if isinstance(exc, httpx.TimeoutException):
            return RegistryError(f"{target} did not answer in time", conf_hint)
        if any(isinstance(c, ConnectionRefusedError) for c in _causes(exc)) or "refused" in low:
            return RegistryError(f"{target} is not reachable: connection refused", conf_hint)
        if any(isinstance(c, socket.gaierror) for c in _causes(exc)) or any(
                s in low for s in ("name or service not known", "nodename nor servname",
                                   "temporary failure in name resolution", "no address associated")):
            return RegistryError(f"{target} is not reachable: unknown host",
                                 "check the registry name, your DNS and the network")
        if isinstance(exc, httpx.UnsupportedProtocol):
            return RegistryError(f"{target}: unsupported URL {exc.request.url}")
        reason = text.split("] ", 1)[-1] or type(exc).__name__
        return RegistryError(f"{target} is not reachable: {reason}", conf_hint)

    def _status_error(self, ep: Endpoint, response: httpx.Response, what: str,
                      not_found: Callable[[str], RootlessError] | None = None) -> NoReturn:
        """Raise the error for a non-success answer; 429 and 5xx as _Transient."""
        response.read()
        status, detail = response.status_code, registry_message(response)
        suffix = f": {detail}" if detail else ""
        if status == 404 and not_found is not None:
            raise not_found(detail.split(":", 1)[0] if detail else "")
        if status == 401:
            raise AuthError(f"{what}: authentication to {ep.display} required{suffix}",
                            f"rootless login {ep.display}")
        if status == 403:
            raise AuthError(f"{what}: access denied by {ep.display}{suffix}", f"rootless login {ep.display}")
        err = RegistryError(f"{what}: registry {ep.display} answered {status} "
                            f"{response.reason_phrase}{suffix}")
        if status in (413, 507):
            # Payload Too Large (RFC 9110 §15.5.14), Insufficient Storage (RFC 4918 §11.5): a
            # size limit or a quota, not something a retry a few seconds later cures.
            raise RegistryError(f"{what}: registry {ep.display} refused it for lack of room ({status} "
                                f"{response.reason_phrase}){suffix}",
                                f"free space or raise the quota at {ep.display} (or its size limit), "
                                "then push again")
        if status == 429:
            hint = ("the registry limits the request rate; wait, or log in (rootless login "
                    f"{ep.display}): authenticated users usually get a higher limit")
            raise _Transient(RegistryError(err.message, hint), retry_after(response))
        if status >= 500:
            raise _Transient(err, retry_after(response))
        raise err

    # --- retries ---------------------------------------------------------------
    def _delay(self, failures: int, hinted: float | None) -> float:
        delay = min(self._base_delay * (2 ** (failures - 1)), _MAX_BACKOFF)
        return max(delay, hinted or 0.0)

    def _retrying(self, ep: Endpoint, attempt: Callable[[], T],
                  progressed: Callable[[], bool] | None = None, push: bool = False) -> T:
        """Run ``attempt`` with exponential backoff on transient failures.

        A refused connection or unknown host on first contact fails at once (the
        next endpoint may serve us); once the endpoint has answered, the same
        failures count as transient, as a restarting registry produces them. An
        attempt that ``progressed`` (moved blob bytes) resets the count, so a long
        download over a flaky link resumes for as long as it advances.
        """
        failures = 0
        contacted = False
        while True:
            try:
                return attempt()
            except _Transient as t:
                err, hinted = t.error, t.retry_after
                contacted = True
            except TokenServerError as e:
                err, hinted = e, e.retry_after
                contacted = True
            except (httpx.TimeoutException, httpx.ReadError, httpx.WriteError,
                    httpx.RemoteProtocolError, httpx.LocalProtocolError) as e:
                err, hinted = self._network_error(ep, e, push), None
                if ep.mirror and isinstance(e, httpx.TimeoutException) and not (progressed and progressed()):
                    # A mirror that accepts and never answers would hold the pull for every
                    # retry's full timeout: the next endpoint gets the request instead.
                    raise err from None
            except httpx.RequestError as e:
                err, hinted = self._network_error(ep, e, push), None
                if not contacted and not (progressed and progressed()):
                    raise err from None
            if progressed is not None and progressed():
                contacted = True
                failures = 0
            failures += 1
            if failures >= self._tries or (hinted is not None and hinted > _MAX_RETRY_AFTER):
                raise err from None
            delay = self._delay(failures, hinted)
            self.ctx.log.debug(f"{err.message}; retry {failures}/{self._tries - 1} in {delay:.1f}s")
            self._sleep(delay)

    # --- API -------------------------------------------------------------------
    def ping(self, endpoint: Endpoint | None = None) -> bool:
        """GET /v2/ without credentials: True if it answers 200, False if it wants
        authentication; RegistryError if it is unreachable or no v2 registry."""
        ep = endpoint or self.primary

        def attempt() -> bool:
            r = self._client.get(f"{ep.base_url}/v2/", auth=None)
            if r.status_code in (200, 401):
                return r.status_code == 200
            self._status_error(ep, r, f"ping {ep}")

        return self._retrying(ep, attempt)

    def login_check(self, username: str, password: str) -> None:
        """Check credentials against the registry itself (not its mirrors), as
        `rootless login` must before storing them. AuthError if refused."""
        ep = self.primary
        auth = RegistryAuth(lambda _host: (username, password), display_name=lambda _h: ep.display)

        def attempt() -> None:
            r = self._client.get(f"{ep.base_url}/v2/", auth=auth)
            if r.status_code == 200:
                return
            if r.status_code == 401:
                raise AuthError(f"authentication to {ep.display} refused", f"rootless login {ep.display}")
            self._status_error(ep, r, f"login to {ep.display}")

        self._retrying(ep, attempt)

    def get_manifest(self, repository: str, ref: str, accept: Sequence[str] = ALL_MANIFEST_TYPES
                     ) -> tuple[bytes, str, str, Endpoint]:
        """(content, media type, digest, endpoint that served it) for a tag or digest.

        Endpoints are tried in order; a mirror that fails in any way hands over to
        the next. With a digest reference the content must hash to it; with a tag
        the digest is computed and checked against Docker-Content-Digest.
        """
        name = self._name(repository, ref)
        mirror_miss: NotFoundError | None = None
        for ep in self.endpoints:
            try:
                data, media_type, digest = self._retrying(
                    ep, functools.partial(self._get_manifest_once, ep, repository, ref, accept, name))
            except RootlessError as e:
                if not ep.mirror:
                    if mirror_miss is not None and not isinstance(e, NotFoundError):
                        # the mirror's answer is the one that says something about the image
                        raise NotFoundError(f"{mirror_miss.message} (and {ep.display}: {e.message})",
                                            mirror_miss.hint) from e
                    raise
                if isinstance(e, NotFoundError):
                    mirror_miss = mirror_miss or e
                    self.ctx.log.debug(f"mirror {ep}: {e.message}; trying the next endpoint")
                else:
                    self.ctx.log.warn(f"mirror {ep} failed: {e.message}; trying the next endpoint",
                                      _config_hint(e))
                continue
            with self._lock:
                self._blob_endpoint[repository] = ep
            return data, media_type, digest, ep
        raise AssertionError("unreachable: the registry itself is always the last endpoint")

    def _tags_sample(self, ep: Endpoint, repository: str) -> list[str] | None:
        """Up to 10 tags of the repository; None if it does not exist (NAME_UNKNOWN).

        Registries answer MANIFEST_UNKNOWN for a missing tag and, distribution among
        them, also for a missing repository; the tag list tells the two apart.
        """
        url = f"{ep.base_url}/v2/{ep.repository(repository)}/tags/list"
        try:
            r = self._client.get(url, params={"n": 10}, follow_redirects=True)
        except (httpx.HTTPError, RootlessError):
            return []
        if r.status_code == 404 and registry_message(r).startswith("NAME_UNKNOWN"):
            return None
        try:
            tags = r.json().get("tags") if r.status_code == 200 else None
        except ValueError:
            tags = None
        return [t for t in tags if isinstance(t, str)][:10] if isinstance(tags, list) else []

    def _manifest_not_found(self, ep: Endpoint, repository: str, ref: str, name: str, code: str
                            ) -> NotFoundError:
        where = self._via(ep)
        tags: list[str] | None = []
        if code == "MANIFEST_UNKNOWN" and not ep.mirror:  # a mirror's miss is only logged
            tags = self._tags_sample(ep, repository)
        if code == "NAME_UNKNOWN" or tags is None:
            return NotFoundError(f"image not known: {name}: repository {self._name(repository)} does "
                                 f"not exist{where}", "check the image name")
        if code == "MANIFEST_UNKNOWN":
            what = "manifest" if ref.startswith("sha256:") else "tag"
            hint = f"tags there include: {', '.join(tags)}" if tags else "check the tag (or digest)"
            return NotFoundError(f"image not known: {name}: repository {self._name(repository)} has no "
                                 f"{what} {ref}{where}", hint)
        return NotFoundError(f"image not known: {name}{where}", "check the image name and tag")

    def _get_manifest_once(self, ep: Endpoint, repository: str, ref: str, accept: Sequence[str],
                           name: str) -> tuple[bytes, str, str]:
        url = f"{ep.base_url}/v2/{ep.repository(repository)}/manifests/{ref}"
        what = f"reading manifest {ref} of {self._name(repository)}{self._via(ep)}"
        with self._client.stream("GET", url, headers={"Accept": ", ".join(accept)},
                                 follow_redirects=True) as r:
            if r.status_code != 200:
                self._status_error(ep, r, what,
                                   lambda code: self._manifest_not_found(ep, repository, ref, name, code))
            buf = bytearray()
            for chunk in r.iter_bytes():
                buf += chunk
                if len(buf) > MAX_MANIFEST_SIZE:
                    raise RegistryError(f"{what}: manifest larger than {MAX_MANIFEST_SIZE >> 20} MiB")
            content_type = r.headers.get("content-type")
            header_digest = r.headers.get("docker-content-digest")
        data = bytes(buf)
        digest = sha256_digest(data)
        src = f"{ep}" + (" (mirror)" if ep.mirror else "")
        if ref.startswith("sha256:") and digest != ref:
            raise DigestMismatchError(f"manifest {name} from {src}: content has digest {digest}",
                                      "the registry or something between it and us altered the manifest")
        if header_digest and header_digest.startswith("sha256:") and header_digest != digest:
            raise DigestMismatchError(f"manifest {name} from {src}: content has digest {digest}, the "
                                      f"registry says {header_digest}",
                                      "the registry or something between it and us altered the manifest")
        return data, sniff_media_type(data, content_type, f"manifest {name}"), digest

    def fetch_blob(self, repository: str, digest: str, writer: BlobSink,
                   progress: Callable[[int], None] | None = None, size: int | None = None) -> None:
        """Stream a blob into ``writer``, resuming from writer.offset.

        ``progress(n)`` is called with each chunk's length, and with a negative
        count when bytes already reported are discarded (the server ignored our
        Range). ``size``, the descriptor's, stops a server that sends too much.
        The writer verifies the digest on commit; this only moves bytes.
        """
        if writer.done:
            return
        check_digest(digest, f"blob of {self._name(repository)}")
        with self._lock:
            first = self._blob_endpoint.get(repository)
        order = ([first] if first else []) + [ep for ep in self.endpoints if ep != first]
        errors: list[tuple[Endpoint, RootlessError]] = []
        for ep in order:
            try:
                self._retrying_blob(ep, repository, digest, writer, progress, size)
                return
            except (DigestMismatchError, StorageError):  # ours, not the endpoint's: no other endpoint helps
                raise
            except RootlessError as e:
                errors.append((ep, e))
                if ep is not order[-1]:
                    if isinstance(e, NotFoundError):
                        self.ctx.log.debug(f"{e.message}; trying the next endpoint")
                    else:
                        self.ctx.log.warn(f"{e.message}; trying the next endpoint", _config_hint(e))
        primary = [e for ep, e in errors if not ep.mirror]
        raise (primary or [errors[-1][1]])[0]

    def _retrying_blob(self, ep: Endpoint, repository: str, digest: str, writer: BlobSink,
                       progress: Callable[[int], None] | None, size: int | None) -> None:
        url = f"{ep.base_url}/v2/{ep.repository(repository)}/blobs/{digest}"
        what = f"fetching blob {digest} of {self._name(repository)}{self._via(ep)}"
        moved = [0]

        def attempt() -> None:
            moved[0] = 0
            self._fetch_blob_once(ep, url, what, repository, digest, writer, progress, size, moved)

        self._retrying(ep, attempt, progressed=lambda: moved[0] > 0)

    def _fetch_blob_once(self, ep: Endpoint, url: str, what: str, repository: str, digest: str,
                         writer: BlobSink, progress: Callable[[int], None] | None, size: int | None,
                         moved: list[int]) -> None:
        def report(n: int) -> None:
            if progress is not None and n:
                progress(n)

        start = writer.offset
        if size is not None and start > size:
            writer.reset()
            report(-start)
            start = 0
        if size is not None and start == size and start > 0:
            return  # complete but not committed: the writer's commit verifies it
        # identity: a Content-Encoding would make Range offsets and the digest apply
        # to bytes other than the blob's.
        headers = {"Accept-Encoding": "identity"}
        if start:
            headers["Range"] = f"bytes={start}-"
        with self._client.stream("GET", url, headers=headers, follow_redirects=True) as r:
            if r.status_code == 416 and start:
                # The partial file is not a prefix the server recognises: start over.
                writer.reset()
                report(-start)
                r.read()
                raise _Transient(RegistryError(f"{what}: the registry refused to resume at byte {start}"))
            if r.status_code == 206 and start:
                if _content_range_start(r) != start:
                    writer.reset()
                    report(-start)
                    raise _Transient(RegistryError(f"{what}: the registry resumed at the wrong offset "
                                                   f"({r.headers.get('content-range')!r})"))
            elif r.status_code == 200:
                if start:  # the server ignored Range and sends it all again
                    writer.reset()
                    report(-start)
            else:
                self._status_error(ep, r, what, lambda _code: NotFoundError(
                    f"blob {digest} not known in {self._name(repository)}{self._via(ep)}",
                    "the image's manifest names a blob the registry does not have"))
            for chunk in r.iter_bytes():
                if size is not None and writer.offset + len(chunk) > size:
                    writer.reset()
                    raise DigestMismatchError(f"blob {digest} from {ep}: more than the {size} bytes its "
                                              "descriptor names", "the registry serves wrong content")
                writer.write(chunk)
                moved[0] += len(chunk)
                report(len(chunk))

    def fetch_blob_bytes(self, repository: str, digest: str, size: int | None = None,
                         max_size: int = MAX_CONFIG_SIZE) -> bytes:
        """A small blob (an image config) in memory, digest verified."""
        w = _MemoryWriter(max_size)
        self.fetch_blob(repository, digest, w, size=size)
        data = bytes(w.buf)
        got = "sha256:" + hashlib.sha256(data).hexdigest()
        if got != digest:
            raise DigestMismatchError(f"blob {digest} of {self._name(repository)}: content has digest {got}",
                                      "the registry or something between it and us altered the blob")
        return data

    # --- push ------------------------------------------------------------------
    # The OCI distribution spec's push flow ("Pushing blobs", "Mounting a blob from another
    # repository", "Pushing Manifests"), always against the registry itself, never a mirror.

    def _push_ext(self, repository: str, mount_from: str | None = None) -> dict[str, Any]:
        from rootless.image.auth import SCOPE_EXTENSION

        scope = f"repository:{repository}:pull,push"
        if mount_from and mount_from != repository:
            scope += f" repository:{mount_from}:pull"
        return {SCOPE_EXTENSION: scope}

    def blob_exists(self, repository: str, digest: str) -> bool:
        """HEAD /v2/NAME/blobs/DIGEST: does the registry hold it in this repository?"""
        ep = self.primary
        url = f"{ep.base_url}/v2/{repository}/blobs/{digest}"

        def attempt() -> bool:
            r = self._client.head(url, extensions=self._push_ext(repository), follow_redirects=True)
            if r.status_code == 200:
                return True
            if r.status_code == 404:
                return False
            self._status_error(ep, r, f"checking blob {digest} in {self._name(repository)}")

        return self._retrying(ep, attempt, push=True)

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """POST ?mount=DIGEST&from=REPO: True if the registry linked the blob (201). A
        registry that cannot mount answers 202 with an upload session; we cancel that and
        upload as usual."""
        ep = self.primary
        url = f"{ep.base_url}/v2/{repository}/blobs/uploads/"

        def attempt() -> bool:
            r = self._client.post(url, params={"mount": digest, "from": from_repository},
                                  extensions=self._push_ext(repository, from_repository))
            if r.status_code == 201:
                return True
            if r.status_code == 202:
                loc = r.headers.get("location")
                if loc:
                    try:
                        self._client.delete(str(httpx.URL(ep.base_url).join(loc)),
                                            extensions=self._push_ext(repository))
                    except httpx.HTTPError:
                        pass  # an abandoned upload session expires on its own
                return False
            if r.status_code in (401, 403, 404):
                r.read()
                return False  # no pull right on the source: upload instead
            self._status_error(ep, r, f"mounting blob {digest} into {self._name(repository)}")

        return self._retrying(ep, attempt, push=True)

    def upload_blob(self, repository: str, digest: str, path: str, size: int,
                    progress: Callable[[int], None] | None = None) -> None:
        """POST an upload session, send the blob file in one streaming PATCH, close it with
        PUT ?digest=. The bytes are hashed as they go and must match ``digest`` (else
        nothing is committed). A dropped connection restarts the upload with backoff."""
        what = f"pushing blob {digest} to {self._name(repository)}"

        def body() -> Iterator[bytes]:
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    yield chunk

        def check(got: str, sent: int) -> str:
            if got != digest or sent != size:
                raise DigestMismatchError(f"{what}: the stored blob has digest {got} ({sent} bytes)",
                                          "the store is damaged: remove the image and pull or build it again")
            return digest

        self._upload(repository, what, body, check, size, progress)

    def upload_stream(self, repository: str, body: Callable[[], Iterator[bytes]], what: str,
                      progress: Callable[[int], None] | None = None) -> str:
        """upload_blob for content whose digest is known only once it is all sent (a layer
        compressed while it uploads): one chunked PATCH, then PUT ?digest= with the digest of
        what went. ``body()`` starts the content from its beginning (again on a retry).
        Returns the digest."""
        return self._upload(repository, f"pushing {what} to {self._name(repository)}", body,
                            lambda got, _sent: got, None, progress)

    def _upload(self, repository: str, what: str, body: Callable[[], Iterator[bytes]],
                check: Callable[[str, int], str], size: int | None,
                progress: Callable[[int], None] | None) -> str:
        ep = self.primary
        sent = [0]

        def counted(h: Any) -> Iterator[bytes]:
            for chunk in body():
                h.update(chunk)
                sent[0] += len(chunk)
                if progress is not None:
                    progress(len(chunk))
                yield chunk

        def attempt() -> str:
            if sent[0] and progress is not None:
                progress(-sent[0])  # starting over
            sent[0] = 0
            ext = self._push_ext(repository)
            r = self._client.post(f"{ep.base_url}/v2/{repository}/blobs/uploads/", extensions=ext)
            if r.status_code != 202:
                self._status_error(ep, r, what)
            loc = r.headers.get("location")
            if not loc:
                raise RegistryError(f"{what}: the registry started an upload without a Location")
            try:
                h = hashlib.sha256()
                headers = {"Content-Type": "application/octet-stream"}
                if size is not None:
                    headers["Content-Length"] = str(size)  # else chunked (RFC 9112 §7.1)
                r = self._client.patch(str(httpx.URL(ep.base_url).join(loc)), content=counted(h), extensions=ext,
                                       headers=headers)
                if r.status_code not in (202, 204):
                    self._status_error(ep, r, what)
                digest = check("sha256:" + h.hexdigest(), sent[0])
                loc = r.headers.get("location") or loc
                url = httpx.URL(ep.base_url).join(loc).copy_merge_params({"digest": digest})
                r = self._client.put(url, extensions=ext, headers={"Content-Length": "0"})
                if r.status_code not in (201, 204):
                    self._status_error(ep, r, what)
                return digest
            except RootlessError:
                # refused for good: cancel the session (the spec's DELETE on the upload URL) so the
                # registry keeps no partial upload; one it cannot cancel expires on its own
                try:
                    self._client.delete(str(httpx.URL(ep.base_url).join(loc)), extensions=ext)
                except httpx.HTTPError:
                    pass
                raise

        return self._retrying(ep, attempt, push=True)

    def put_manifest(self, repository: str, ref: str, data: bytes, media_type: str) -> str:
        """PUT the manifest's exact bytes with its own content type; returns its digest."""
        ep = self.primary
        digest = sha256_digest(data)
        what = f"writing manifest {ref} of {self._name(repository)}"

        def attempt() -> str:
            r = self._client.put(f"{ep.base_url}/v2/{repository}/manifests/{ref}", content=data,
                                 headers={"Content-Type": media_type}, extensions=self._push_ext(repository))
            if r.status_code not in (200, 201, 202):
                self._status_error(ep, r, what)
            said = r.headers.get("docker-content-digest")
            if said and said.startswith("sha256:") and said != digest:
                raise DigestMismatchError(f"{what}: the registry stored digest {said}, the manifest is {digest}")
            return digest

        return self._retrying(ep, attempt, push=True)
