"""The REST API's network bodies and filters (rootless.api.networks) and a create body's
network and volume fields (rootless.api.containers): pure translation, no service."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from rootless.api.containers import run_options
from rootless.api.http import ApiError, BadRequest
from rootless.api.networks import create_args, endpoint_args, matches, predefined_id

CTX: Any = SimpleNamespace(config=SimpleNamespace(network="slirp4netns", cgroup_manager=""))


def test_create_args_from_the_docker_cli_and_compose() -> None:
    # docker network create --subnet 10.90.0.0/24 --label a=b n
    body = {"Name": "n", "CheckDuplicate": True, "Driver": "bridge", "Scope": "local", "Options": {},
            "IPAM": {"Driver": "default", "Options": {}, "Config": [{"Subnet": "10.90.0.0/24"}]},
            "Internal": False, "Attachable": False, "Ingress": False, "ConfigOnly": False,
            "ConfigFrom": {"Network": ""}, "Labels": {"a": "b"}}
    assert create_args(body) == {"name": "n", "subnet": "10.90.0.0/24", "gateway": None, "internal": False,
                                 "labels": ["a=b"]}
    # docker-compose 1.29: driver None, options None, ipam None, attachable True
    compose = {"Name": "p_default", "Driver": None, "Options": None, "IPAM": None, "CheckDuplicate": True,
               "Internal": False, "Attachable": True, "Labels": {"com.docker.compose.project": "p"}}
    assert create_args(compose)["labels"] == ["com.docker.compose.project=p"]


@pytest.mark.parametrize(("body", "named"), [
    ({"Name": "n", "Driver": "overlay"}, "Driver"),
    ({"Name": "n", "EnableIPv6": True}, "EnableIPv6"),
    ({"Name": "n", "Options": {"com.docker.network.bridge.name": "br9"}}, "Options"),
    ({"Name": "n", "IPAM": {"Config": [{"Subnet": "10.1.0.0/24", "IPRange": "10.1.0.0/25"}]}}, "IPRange"),
    ({"Name": "n", "IPAM": {"Config": [{"Subnet": "10.1.0.0/24"}, {"Subnet": "10.2.0.0/24"}]}}, "one subnet"),
    ({"Name": "n", "IPAM": {"Driver": "dhcp"}}, "IPAM.Driver"),
    ({}, "Name"),
    ([], "JSON object"),
])
def test_create_args_refuse_what_is_not_served_by_name(body: Any, named: str) -> None:
    with pytest.raises(BadRequest, match=named):
        create_args(body)


def test_predefined_names_cannot_be_created() -> None:
    with pytest.raises(ApiError, match="pre-defined") as e:
        create_args({"Name": "bridge"})
    assert e.value.status == 403


def test_filters_match_as_dockers() -> None:
    def m(filters: dict[str, list[str]], name: str = "proj_default", builtin: bool = False, used: bool = False) -> bool:
        return matches(name, "abcdef0123", "bridge", {"com.docker.compose.project": "proj", "x": ""}, builtin,
                       used, filters)

    assert m({"name": ["proj"]}) and not m({"name": ["other"]})
    assert m({"name": ["other", "default"]}), "the values of one key: any of them"
    assert m({"label": ["com.docker.compose.project=proj", "x"]})
    assert not m({"label": ["com.docker.compose.project=proj", "y"]}), "labels: all of them"
    assert not m({"label": ["com.docker.compose.project=other"]})
    assert m({"id": ["abc"]}) and not m({"id": ["bcd"]})
    assert m({"driver": ["bridge"]}) and not m({"driver": ["host"]})
    assert m({"type": ["custom"]}) and not m({"type": ["builtin"]}) and m({"type": ["builtin"]}, builtin=True)
    assert m({"dangling": ["true"]}) and not m({"dangling": ["true"]}, used=True)
    assert not m({"dangling": ["1"]}, builtin=True), "a predefined network is never dangling"
    assert not m({"name": ["proj"], "driver": ["host"]}), "the keys: all of them"
    with pytest.raises(BadRequest, match="'bogus'"):
        m({"bogus": ["x"]})
    with pytest.raises(BadRequest, match="type"):
        m({"type": ["weird"]})


def test_predefined_ids_are_stable_and_distinct() -> None:
    assert predefined_id("bridge") == predefined_id("bridge") != predefined_id("host")
    assert len(predefined_id("none")) == 64


def test_endpoint_args() -> None:
    assert endpoint_args(None) == ([], None)
    assert endpoint_args({"Aliases": ["web", "web", "w2"], "IPAMConfig": {"IPv4Address": "10.89.0.9"}}) == (
        ["web", "w2"], "10.89.0.9")
    with pytest.raises(BadRequest, match="IPv6Address"):
        endpoint_args({"IPAMConfig": {"IPv6Address": "fd00::2"}})
    with pytest.raises(BadRequest, match="Links"):
        endpoint_args({"Links": ["a:b"]})
    with pytest.raises(BadRequest, match="Aliases"):
        endpoint_args({"Aliases": "web"})


def test_create_body_on_a_user_network_with_aliases() -> None:
    body = {"Image": "alpine", "HostConfig": {"NetworkMode": "p_default"},
            "NetworkingConfig": {"EndpointsConfig": {"p_default": {"Aliases": ["web"], "IPAMConfig": {}}}}}
    opts, meta = run_options(CTX, body, "p_web_1")
    assert (opts.network, opts.networks, opts.network_alias, opts.ip) == ("p_default", ("p_default",), ("web",), None)
    assert meta["Connect"] == {}
    # another endpoint is connected after the create, with its own aliases
    body["NetworkingConfig"]["EndpointsConfig"]["back"] = {"Aliases": ["db"]}
    assert run_options(CTX, body, None)[1]["Connect"] == {"back": {"Aliases": ["db"]}}


def test_create_body_on_the_default_network() -> None:
    opts, _ = run_options(CTX, {"Image": "alpine", "HostConfig": {"NetworkMode": "bridge"}}, None)
    assert (opts.network, opts.networks) == ("slirp4netns", ())
    opts, _ = run_options(CTX, {"Image": "alpine", "HostConfig": {"NetworkMode": "none"}}, None)
    assert opts.network == "none"
    with pytest.raises(BadRequest, match="user network"):
        run_options(CTX, {"Image": "alpine", "NetworkingConfig": {"EndpointsConfig": {"bridge": {"Aliases": ["a"]}}}},
                    None)
    with pytest.raises(BadRequest, match="other"):
        run_options(CTX, {"Image": "alpine", "NetworkingConfig": {"EndpointsConfig": {"other": {}}}}, None)
    opts, _ = run_options(CTX, {"Image": "alpine", "HostConfig": {"NetworkMode": "container:web"}}, None)
    assert (opts.network, opts.networks) == ("container:web", ("container:web",))


def test_config_volumes_not_covered_are_anonymous_volumes() -> None:
    # compose lists every volume's path in Config.Volumes, named ones (in Binds) too
    body = {"Image": "alpine", "Volumes": {"/data": {}, "/cache/": {}, "/t": {}, "/m": {}},
            "HostConfig": {"Binds": ["rlc_data:/data:rw"], "Tmpfs": {"/t": ""},
                           "Mounts": [{"Type": "volume", "Source": "v", "Target": "/m"}]}}
    opts, _ = run_options(CTX, body, None)
    assert opts.volumes == ("rlc_data:/data:rw", "/cache/")
    with pytest.raises(BadRequest, match="Config.Volumes"):
        run_options(CTX, {"Image": "alpine", "Volumes": ["/x"]}, None)


def test_host_config_confinement_and_health_as_run_flags() -> None:
    body = {"Image": "alpine", "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 2_000_000_000,
                                               "Retries": 2, "Timeout": 0},
            "HostConfig": {"Devices": [{"PathOnHost": "/dev/fuse", "PathInContainer": "", "CgroupPermissions": "rw"}],
                           "Ulimits": [{"Name": "nofile", "Soft": 512, "Hard": 1024}],
                           "Sysctls": {"net.ipv4.ip_forward": "1"}, "GroupAdd": ["audio"], "ShmSize": 33554432,
                           "PidMode": "container:web", "IpcMode": "private", "UTSMode": "host"}}
    opts, _ = run_options(CTX, body, None)
    assert opts.device == ("/dev/fuse:/dev/fuse:rw",) and opts.ulimit == ("nofile=512:1024",)
    assert opts.sysctl == ("net.ipv4.ip_forward=1",) and opts.group_add == ("audio",) and opts.shm_size == "33554432"
    assert (opts.pid, opts.ipc, opts.uts) == ("container:web", "private", "host")
    assert (opts.health_cmd, opts.health_interval, opts.health_retries, opts.health_timeout) == (
        '["CMD-SHELL", "true"]', "2.0s", "2", None)
    assert run_options(CTX, {"Image": "alpine", "Healthcheck": {"Test": ["NONE"]}}, None)[0].health_cmd == "none"
    with pytest.raises(BadRequest, match="Ulimits"):
        run_options(CTX, {"Image": "alpine", "HostConfig": {"Ulimits": [{"Name": "nofile"}]}}, None)
    with pytest.raises(BadRequest, match="BlkioWeight"):
        run_options(CTX, {"Image": "alpine", "HostConfig": {"BlkioWeight": 300}}, None)
