"""Session fixtures for the integration tests: real registries holding images the tests
built, and a runner for the CLI in an isolated environment.

Fixtures (see each docstring):
  registry         the real docker-registry (distribution 2.8) on 127.0.0.1
  mirror           counting/fault-injecting proxy in front of it; docker.io's mirror
  images           the test images, built and pushed once per session
  auth_registries  a htpasswd (basic) registry and a token-auth (bearer) registry
  rl               RootlessEnv with a store of its own (function scope)
  rl_shared        RootlessEnv shared by the whole session (for speed)
  rootless_env     alias of rl
  faults           the mirror, with faults cleared after the test

Run as the unprivileged test user (scripts/test does that from root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import imagebuild as ib
from tests import testimages as ti
from tests.integration.harness import (
    IN_CI,
    AuthRegistries,
    OtherUserEnv,
    Registry,
    RegistryProxy,
    RootlessEnv,
    TokenService,
    free_port,
    rootless_config,
    start_registry,
)

HERE = Path(__file__).parent
ROOT_MESSAGE = "integration tests must run as an unprivileged user: use scripts/test"

BASIC_USER, BASIC_PASSWORD = "alice", "wonderland-7"
TOKEN_USER, TOKEN_PASSWORD = "bob", "builder-42"
TOKEN_PUSHER, TOKEN_PUSHER_PASSWORD = "pusher", "push-it-9"
TOKEN_SERVICE = "rootless-token-registry"
TOKEN_ISSUER = "rootless-test-token-issuer"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs the real kernel, newuidmap and the test registry")
    config.addinivalue_line("markers", "vm: needs the cgroup v2 VM (not run by default)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ours = [it for it in items if HERE in Path(str(it.fspath)).parents]
    for it in ours:
        it.add_marker(pytest.mark.integration)
    if ours and os.geteuid() == 0:
        if IN_CI:
            # A misconfigured CI must not pass by skipping everything that matters.
            raise pytest.UsageError(f"running as root in CI: {ROOT_MESSAGE}")
        skip = pytest.mark.skip(reason=ROOT_MESSAGE)
        for it in ours:
            it.add_marker(skip)


def need(condition: bool, reason: str) -> None:
    """Skip when a prerequisite is missing; in CI a missing prerequisite is a failure."""
    __tracebackhide__ = True
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI is missing a prerequisite: {reason}", pytrace=False)
    pytest.skip(reason)


def cache_dir() -> Path:
    d = os.environ.get("ROOTLESS_TEST_CACHE")
    if d:
        return Path(d)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rootless-tests"


# --------------------------------------------------------------------------- registries


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """The real /usr/bin/docker-registry, anonymous, plain HTTP on 127.0.0.1:PORT.
    ``.url``, ``.host``, ``.root`` (storage), ``.log()``, ``.pusher()``."""
    need(os.path.exists("/usr/bin/docker-registry") or bool(shutil.which("docker-registry")),
         "docker-registry is not installed (apt-get install docker-registry)")
    reg = start_registry("main", tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def mirror(registry: Registry) -> Iterator[RegistryProxy]:
    """The proxy in front of ``registry`` that the CLI's docker.io mirror points at.
    ``.mark()``, ``.since(mark)``, ``.blob_gets(mark, digest)``, ``.add_fault(Fault(...))``."""
    proxy = RegistryProxy(registry)
    yield proxy
    proxy.stop()


@pytest.fixture
def faults(mirror: RegistryProxy) -> Iterator[RegistryProxy]:
    """The mirror, for a test that injects faults; they are cleared afterwards."""
    mirror.clear_faults()
    yield mirror
    mirror.clear_faults()


@pytest.fixture(scope="session")
def dead_port() -> int:
    """A port nothing listens on (the "registry is down" case)."""
    return free_port()


class TestImages(dict[str, ti.Pushed]):
    """name ("library/alpine:latest") → Pushed; ``require(name)`` skips (fails in CI)
    when an image could not be built here, with the reason."""

    __test__ = False

    def __init__(self) -> None:
        super().__init__()
        self.missing: dict[str, str] = {}
        self.timings: dict[str, float] = {}

    def require(self, name: str) -> ti.Pushed:
        __tracebackhide__ = True
        if name not in self:
            need(False, self.missing.get(name, f"test image {name} was not built"))
        return self[name]


@pytest.fixture(scope="session")
def images(registry: Registry, request: pytest.FixtureRequest) -> TestImages:
    """Builds and pushes every test image once per session (see tests/testimages.py)."""
    import time

    out = TestImages()
    need(ti.BUSYBOX.exists(), "/bin/busybox is missing (apt-get install busybox-static)")
    t0 = time.monotonic()
    with registry.pusher() as p:
        base = ti.busybox_layer()
        out["library/busybox:latest"] = ti.push_image(
            p, "library/busybox", "latest", ib.make_image([base], cmd=["sh"]))
        for tag, version in (("latest", "3.21.0"), ("3.20", "3.20.3")):
            img = ib.make_image([base, ti.alpine_layer(version)], cmd=["/bin/sh"],
                                labels={"org.opencontainers.image.version": version})
            out[f"library/alpine:{tag}"] = ti.push_image(p, "library/alpine", tag, img)
        out["test/inspect:latest"] = ti.push_image(p, "test/inspect", "latest", ib.make_image(
            [base, ti.unique_layer("inspect", 1024)], entrypoint=["/bin/sh", "-c"], cmd=["echo hi"],
            workdir="/var/www", user="1000:1000", exposed_ports=["80/tcp", "53/udp"],
            labels={"maintainer": "rootless tests", "purpose": "inspect"},
            env=["PATH=/usr/bin:/bin", "GREETING=hello world"], author="rootless tests"))
        out["test/multilayer:latest"] = ti.push_image(p, "test/multilayer", "latest",
                                                      ti.multilayer_image(base))
        amd = ti.arch_image("amd64", None, "oci", base)
        arm = ti.arch_image("arm64", "v8", "oci", None)
        out["test/multiarch:latest"] = ti.push_index(p, "test/multiarch", "latest",
                                                     ib.make_index([amd, arm], "oci"))
        amd_d = ti.arch_image("amd64", None, "docker", base)
        arm_d = ti.arch_image("arm64", "v8", "docker", None)
        out["test/multiarch-list:latest"] = ti.push_index(p, "test/multiarch-list", "latest",
                                                          ib.make_index([amd_d, arm_d], "docker"))
        s390 = ti.arch_image("s390x", None, "oci", None)
        out["test/s390x-only:latest"] = ti.push_index(p, "test/s390x-only", "latest",
                                                      ib.make_index([s390], "oci"))
        zl = ti.busybox_layer("zstd")
        out["test/zstd:latest"] = ti.push_image(p, "test/zstd", "latest", ib.make_image(
            [zl, ti.unique_layer("zstd-top", 64 * 1024, "zstd")], fmt="oci", cmd=["sh"]))
        out["test/uncompressed:latest"] = ti.push_image(p, "test/uncompressed", "latest", ib.make_image(
            [ti.unique_layer("uncompressed", 64 * 1024, "none")], fmt="oci", cmd=["sh"]))
        # Volume copy-up: /data holds files of other owners and modes; /anon is a VOLUME.
        out["test/volume:latest"] = ti.push_image(p, "test/volume", "latest", ib.make_image(
            [base, ib.build_layer([
                ib.directory("data", mode=0o750, uid=1000, gid=1000),
                ib.file("data/seed", "from the image\n", mode=0o640, uid=33, gid=33),
                ib.directory("data/sub", mode=0o700, uid=65534, gid=65534),
                ib.file("data/sub/inner", "inner\n", mode=0o600, uid=65534, gid=65534),
                ib.symlink("data/link", "seed", uid=1000, gid=1000),
                ib.directory("anon", mode=0o755),
                ib.file("anon/preset", "anonymous seed\n"),
            ])], cmd=["sh"], volumes=["/anon"]))
        # One image per fault, each with blobs no other image shares.
        for name, size in (("corrupt", 256 * 1024), ("flaky", 256 * 1024), ("cut", 4 << 20),
                           ("redirect", 256 * 1024), ("concurrent", 8 << 20), ("dedup", 128 * 1024)):
            img = ib.make_image([base, ti.unique_layer(name, size)], cmd=["sh"])
            out[f"test/{name}:latest"] = ti.push_image(p, f"test/{name}", "latest", img)
        out.timings["small images"] = time.monotonic() - t0

        t1 = time.monotonic()
        if ti.BOOKWORM_TAR.exists():
            deb = ti.debian_layer(cache_dir())
            out["library/debian:bookworm"] = ti.push_image(
                p, "library/debian", "bookworm", ib.make_image([deb], cmd=["bash"]))
            six = ti.sixlayer_layers(cache_dir())
            out["test/sixlayer:latest"] = ti.push_image(p, "test/sixlayer", "latest",
                                                        ib.make_image(six, cmd=["bash"]))
        else:
            reason = (f"{ti.BOOKWORM_TAR} is missing: run scripts/setup-host as root "
                      "(mmdebstrap --variant=minbase bookworm)")
            # The VM lane's guest has no bookworm tarball: a vm test that needs the debian images
            # still fails there, through images.require().
            if IN_CI and os.environ.get("ROOTLESS_TEST_LANE") != "vm":
                pytest.fail(f"CI is missing a prerequisite: {reason}", pytrace=False)
            out.missing["library/debian:bookworm"] = reason
            out.missing["test/sixlayer:latest"] = reason
        out.timings["debian images"] = time.monotonic() - t1
    request.config.stash[TIMINGS] = out.timings
    return out


@pytest.fixture(scope="session")
def auth_registries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthRegistries]:
    """``.basic``: htpasswd (bcrypt) registry, user alice, holding private/busybox.
    ``.token``: registry with ``auth: token`` and the test token service: bob may pull
    private/*; anyone may pull public/*; pusher may push anything.  Both Registry
    objects carry the pushing credentials; ``.users`` maps user → password."""
    need(bool(shutil.which("htpasswd")), "htpasswd is not installed (apt-get install apache2-utils)")
    work = tmp_path_factory.mktemp("auth")
    line = subprocess.run(["htpasswd", "-Bbn", BASIC_USER, BASIC_PASSWORD], check=True,
                          capture_output=True, text=True).stdout.strip()
    htfile = work / "htpasswd"
    htfile.write_text(line + "\n")
    basic = start_registry("basic", work / "basic",
                           auth={"htpasswd": {"realm": "rootless-basic", "path": str(htfile)}})
    basic.username, basic.password = BASIC_USER, BASIC_PASSWORD

    def grants(user: str | None, repo: str) -> set[str]:
        if user == TOKEN_PUSHER:
            return {"pull", "push", "delete"}
        if repo.startswith("public/"):
            return {"pull"}
        if user == TOKEN_USER and repo.startswith("private/"):
            return {"pull"}
        return set()

    svc = TokenService(work / "token-service", TOKEN_SERVICE, TOKEN_ISSUER,
                       {TOKEN_USER: TOKEN_PASSWORD, TOKEN_PUSHER: TOKEN_PUSHER_PASSWORD}, grants)
    try:
        token = start_registry("token", work / "token", auth={"token": {
            "realm": svc.realm, "service": TOKEN_SERVICE, "issuer": TOKEN_ISSUER,
            "rootcertbundle": str(svc.cert_path)}})
    except BaseException:
        svc.stop()
        basic.stop()
        raise
    token.username, token.password = TOKEN_PUSHER, TOKEN_PUSHER_PASSWORD
    try:
        img = ib.make_image([ti.busybox_layer(), ti.unique_layer("private", 4096)], cmd=["sh"])
        with basic.pusher() as p:
            p.push_image("private/busybox", "latest", img)
        with token.pusher() as p:
            p.push_image("private/busybox", "latest", img)
            p.push_image("public/busybox", "latest", img)
        yield AuthRegistries(basic=basic, token=token, token_service=svc,
                             users={BASIC_USER: BASIC_PASSWORD, TOKEN_USER: TOKEN_PASSWORD})
    finally:
        token.stop()
        basic.stop()
        svc.stop()


# --------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="session")
def rootless_config_text(mirror: RegistryProxy, registry: Registry, auth_registries: AuthRegistries,
                         dead_port: int) -> str:
    return rootless_config(mirror.host, [registry.host, auth_registries.basic.host,
                                         auth_registries.token.host, f"127.0.0.1:{dead_port}"])


def _make_env(base: Path, text: str) -> Iterator[RootlessEnv]:
    env = RootlessEnv(base, text)
    yield env
    left = env.kill_leftovers()
    if left:
        print(f"killed processes left behind by rootless: {left}")
    # the store holds files owned by subordinate IDs: only the namespace can remove them
    if env.store.exists():
        subprocess.run([*env.command, "unshare", "rm", "-rf", str(env.store)], env=env.env,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=120)


@pytest.fixture
def rl(tmp_path: Path, rootless_config_text: str, images: TestImages) -> Iterator[RootlessEnv]:
    """``rl(*args, input=None, env=None, check=False, timeout=90) -> CompletedProcess[str]``
    with a store of its own.  Attributes: home, store, runroot, config_path, env,
    popen(*args), processes(), wait_no_processes(), layer_dir(diff_id), check_blobs(),
    images_json(), inspect(name)."""
    yield from _make_env(tmp_path / "rl", rootless_config_text)


@pytest.fixture
def rootless_env(rl: RootlessEnv) -> RootlessEnv:
    return rl


@pytest.fixture(scope="session")
def rl_shared(tmp_path_factory: pytest.TempPathFactory, rootless_config_text: str,
              images: TestImages) -> Iterator[RootlessEnv]:
    """Like ``rl`` but one store for the whole session: for tests that only read."""
    yield from _make_env(tmp_path_factory.mktemp("rl-shared"), rootless_config_text)


def _shape_user(shape: str) -> str:
    import pwd

    user = f"{pwd.getpwuid(os.getuid()).pw_name}-{shape}"
    try:
        pwd.getpwnam(user)
    except KeyError:
        need(False, f"no user {user}: run scripts/setup-host as root (it creates the host-shape users)")
    ok = subprocess.run(["sudo", "-n", "-u", user, "--", "true"], capture_output=True, text=True)
    need(ok.returncode == 0, f"sudo -u {user} is not allowed: run scripts/setup-host as root ({ok.stderr.strip()})")
    return user


@pytest.fixture
def rl_norange(rootless_config_text: str, images: TestImages) -> Iterator[OtherUserEnv]:
    """The CLI as ``<test user>-norange``: no /etc/subuid entry, so the single-ID mapping."""
    env = OtherUserEnv(_shape_user("norange"), rootless_config_text)
    yield env
    env.close()


@pytest.fixture
def rl_short(rootless_config_text: str, images: TestImages) -> Iterator[OtherUserEnv]:
    """The CLI as ``<test user>-short``: a subordinate range of only 1000 IDs."""
    env = OtherUserEnv(_shape_user("short"), rootless_config_text)
    yield env
    env.close()


@pytest.fixture(scope="session")
def subid_start() -> int:
    """The first host ID of the test user's /etc/subuid range (namespace ID 1 maps to it)."""
    import pwd

    user = pwd.getpwuid(os.getuid()).pw_name
    for line in Path("/etc/subuid").read_text().splitlines():
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in (user, str(os.getuid())):
            return int(parts[1])
    need(False, f"{user} has no /etc/subuid range")
    raise AssertionError("unreachable")


TIMINGS = pytest.StashKey[dict[str, float]]()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    timings = config.stash.get(TIMINGS, None)
    if timings:
        terminalreporter.write_line(
            "integration session setup: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
