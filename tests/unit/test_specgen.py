"""specgen: image config + run flags → Spec, by Podman's (and Docker's) rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from rootless.errors import RootlessError
from rootless.image import specgen
from rootless.image.specgen import HostInfo, RunOptions
from rootless.runtime import users
from rootless.spec import IdMap, RootfsPlan

PLAN = RootfsPlan("overlay", "/store/c/merged", ("/store/l1",), "/store/c/upper", "/store/c/work")
STORE_UIDS = (IdMap(0, 1000, 1), IdMap(1, 100000, 65536))
CID = "ab" * 32


def build(cfg: dict | None = None, host: HostInfo | None = None, **kw: object):  # type: ignore[no-untyped-def]
    opts = RunOptions(image="img", **kw)  # type: ignore[arg-type]
    return specgen.build(cfg or {"Cmd": ["sh"]}, opts, PLAN, container_id=CID, rundir="/run/x",
                         uid_map=STORE_UIDS, gid_map=STORE_UIDS, host=host or HostInfo(uid=1000, gid=1000))


# --------------------------------------------------------------------------- entrypoint / cmd

@pytest.mark.parametrize(("cfg", "args", "entrypoint", "want"), [
    ({"Cmd": ["sh"]}, (), None, ("sh",)),
    ({"Cmd": ["sh"]}, ("echo", "hi"), None, ("echo", "hi")),
    ({"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"]}, (), None, ("/bin/sh", "-c", "echo hi")),
    ({"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"]}, ("date",), None, ("/bin/sh", "-c", "date")),
    # --entrypoint drops the image's Cmd
    ({"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"]}, (), "/bin/echo", ("/bin/echo",)),
    ({"Cmd": ["sh"]}, ("a", "b"), "/bin/echo", ("/bin/echo", "a", "b")),
    ({"Entrypoint": ["x"], "Cmd": ["sh"]}, ("id",), "", ("id",)),
    ({"Cmd": ["sh"]}, ("x",), '["/bin/sh", "-c"]', ("/bin/sh", "-c", "x")),
])
def test_command_rules(cfg: dict, args: tuple, entrypoint: str | None, want: tuple) -> None:
    assert specgen.command(cfg, args, entrypoint) == want


def test_no_command_is_an_error() -> None:
    with pytest.raises(RootlessError, match="no command or entrypoint"):
        specgen.command({}, (), None)
    with pytest.raises(RootlessError):
        specgen.command({"Cmd": ["sh"]}, (), "")


# --------------------------------------------------------------------------- environment

def test_env_defaults_image_then_flags() -> None:
    spec = build({"Cmd": ["sh"], "Env": ["PATH=/img/bin", "A=image", "B=image"]},
                 host=HostInfo(env={"HOSTVAR": "h", "XA": "1", "XB": "2"}),
                 env=("B=flag", "HOSTVAR", "MISSING", "X*", "C=c=d"))
    env = dict(e.split("=", 1) for e in spec.process.env)
    assert env["PATH"] == "/img/bin"
    assert env["TERM"] == "xterm"
    assert env["A"] == "image" and env["B"] == "flag" and env["C"] == "c=d"
    assert env["HOSTVAR"] == "h" and "MISSING" not in env
    assert env["XA"] == "1" and env["XB"] == "2"
    assert env["container"] == "rootless"
    assert env["HOSTNAME"] == CID[:12] == spec.hostname
    assert "HOME" not in env  # the runtime adds it from the container's passwd


def test_default_path_when_image_has_none() -> None:
    env = dict(e.split("=", 1) for e in build().process.env)
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def test_env_file(tmp_path: Path) -> None:
    f = tmp_path / "env"
    f.write_text("# comment\n\nK1=v1\n  K2=with spaces \nFROMHOST\nK1=again\n")
    spec = build(host=HostInfo(env={"FROMHOST": "yes"}), env_files=(str(f),), env=("K2=flag",))
    env = dict(e.split("=", 1) for e in spec.process.env)
    assert env["K1"] == "again" and env["K2"] == "flag" and env["FROMHOST"] == "yes"
    with pytest.raises(RootlessError, match="env file"):
        build(env_files=(str(tmp_path / "nope"),))


def test_env_without_name_is_an_error() -> None:
    with pytest.raises(RootlessError, match="no name"):
        build(env=("=x",))


# --------------------------------------------------------------------------- workdir, user, hostname

def test_workdir_and_user() -> None:
    spec = build({"Cmd": ["sh"], "WorkingDir": "/var/www", "User": "1000:1000"})
    assert spec.process.cwd == "/var/www" and spec.process.user == "1000:1000"
    spec = build({"Cmd": ["sh"], "WorkingDir": "/var/www", "User": "1000"}, workdir="/tmp", user="nobody")
    assert spec.process.cwd == "/tmp" and spec.process.user == "nobody"
    assert build().process.cwd == "/" and build().process.user == ""
    with pytest.raises(RootlessError, match="absolute"):
        build(workdir="rel")


def test_hostname_and_name() -> None:
    spec = build(hostname="box", name="web")
    assert spec.hostname == "box" and spec.name == "web"
    files = {f.name: f.content for f in spec.files}
    assert files["hostname"] == "box\n"
    assert "127.0.0.1\tbox web" in files["hosts"]
    assert 'name="web"' in files[".containerenv"] and f'id="{CID}"' in files[".containerenv"]


PASSWD = "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\nbad line\n"
GROUP = "root:x:0:root\nwheel:x:10:root,user\nuser:x:1000:\naudio:x:29:user\n"


@pytest.mark.parametrize(("spec", "want"), [
    ("", (0, 0, (0, 10), "/root")),
    ("root", (0, 0, (0, 10), "/root")),
    ("user", (1000, 1000, (10, 29), "/home/user")),
    ("1000", (1000, 1000, (10, 29), "/home/user")),
    ("user:wheel", (1000, 10, (), "/home/user")),
    ("user:5", (1000, 5, (), "/home/user")),
    ("4242", (4242, 0, (), "/")),
    ("4242:4243", (4242, 4243, (), "/")),
])
def test_user_resolution(spec: str, want: tuple) -> None:
    u = users.resolve(spec, PASSWD, GROUP)
    assert (u.uid, u.gid, u.additional_gids, u.home) == want


def test_user_resolution_errors() -> None:
    with pytest.raises(RootlessError, match="unable to find user nobody"):
        users.resolve("nobody", PASSWD, GROUP)
    with pytest.raises(RootlessError, match="unable to find group staff"):
        users.resolve("user:staff", PASSWD, GROUP)
    assert users.resolve("7", None, None).uid == 7


# --------------------------------------------------------------------------- capabilities

def test_default_caps_are_podmans_eleven() -> None:
    caps = build().process.capabilities
    assert len(caps) == 11
    assert specgen.cap_mask(caps) == 0x00000000800405FB


def test_cap_add_drop_all() -> None:
    assert specgen.capabilities(["net_admin"], ["CAP_CHOWN", "kill"]) == tuple(sorted(
        set(specgen.DEFAULT_CAPS) - {"CAP_CHOWN", "CAP_KILL"} | {"CAP_NET_ADMIN"},
        key=specgen.CAP_NUMBERS.__getitem__))
    assert specgen.capabilities([], ["ALL"]) == ()
    assert specgen.capabilities(["NET_RAW"], ["all"]) == ("CAP_NET_RAW",)
    every = specgen.capabilities(["ALL"], [], cap_last=40)
    assert len(every) == 41
    assert "CAP_SYS_ADMIN" not in specgen.capabilities(["ALL"], ["SYS_ADMIN"])
    assert len(specgen.capabilities([], [], privileged=True, cap_last=38)) == 39
    with pytest.raises(RootlessError, match="unknown capability"):
        specgen.capabilities(["CAP_NOPE"], [])
    with pytest.raises(RootlessError):
        specgen.capabilities(["ALL"], ["ALL"])


def test_ambient_for_non_root() -> None:
    spec = build(cap_add=("NET_ADMIN",), cap_drop=("CHOWN",))
    assert spec.process.ambient_capabilities == ("CAP_NET_ADMIN",)
    assert specgen.ambient_caps(["ALL"], ["CAP_KILL"]) == ("CAP_KILL",)


def test_privileged_drops_masks() -> None:
    spec = build()
    assert "/proc/kcore" in spec.masked_paths and "/proc/sys" in spec.readonly_paths
    priv = build(privileged=True)
    assert priv.masked_paths == () and priv.readonly_paths == ()
    assert "CAP_SYS_ADMIN" in priv.process.capabilities


def test_security_opt() -> None:
    assert build(security_opt=("no-new-privileges",)).process.no_new_privileges
    assert build(security_opt=("no-new-privileges=true",)).process.no_new_privileges
    assert not build().process.no_new_privileges
    with pytest.raises(RootlessError):
        build(security_opt=("label=disable",))


# --------------------------------------------------------------------------- mounts

def test_system_mount_order() -> None:
    dests = [m.destination for m in build().mounts]
    assert dests[:5] == ["/proc", "/dev", "/sys", "/dev/pts", "/dev/mqueue"]
    assert dests.index("/dev/shm") < dests.index("/dev/null") < dests.index("/etc/hosts")
    assert dests[-3:] == ["/run/.containerenv", "/etc/hostname", "/etc/hosts"]
    sysfs = next(m for m in build().mounts if m.destination == "/sys")
    assert sysfs.type == "sysfs" and "ro" in sysfs.options
    host = build(network="host", host=HostInfo(resolv_conf="nameserver 10.0.0.1\n"))
    host_sys = next(m for m in host.mounts if m.destination == "/sys")
    assert host_sys.type == "bind" and "ro" in host_sys.options
    assert host.mounts[-1].destination == "/etc/resolv.conf"
    assert "network" in build().namespaces and "network" not in host.namespaces


def test_hosts_file() -> None:
    text = specgen.hosts_file("box", "web", "none", "# the host's\n127.0.0.1 localhost\n\n10.1.1.1  db  db.lan # x\n")
    assert text == "127.0.0.1\tlocalhost\n10.1.1.1\tdb db.lan\n127.0.0.1\tbox web\n"
    assert specgen.hosts_file("h", "h", "none", "") == "127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.0.1\th\n"


def test_volumes(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    spec = build(host=HostInfo(cwd=str(tmp_path)), volumes=(f"{tmp_path}/d:/data:ro,z", "./d:/a/b"),
                 tmpfs=("/scratch:size=1m",), mounts=("type=bind,src=./d,dst=/m,readonly",
                                                      "type=tmpfs,target=/t,tmpfs-size=2m"))
    user = [m for m in spec.mounts if m.destination in ("/data", "/a/b", "/scratch", "/m", "/t")]
    by = {m.destination: m for m in user}
    assert by["/data"].source == str(tmp_path / "d") and by["/data"].options == ("rbind", "ro")
    assert by["/a/b"].source == str(tmp_path / "d") and "ro" not in by["/a/b"].options
    assert by["/scratch"].type == "tmpfs" and "size=1m" in by["/scratch"].options
    assert "noexec" in by["/scratch"].options
    assert by["/m"].options == ("rbind", "ro")
    assert "size=2m" in by["/t"].options
    # parents before children
    assert [m.destination for m in user][-1] == "/a/b"


@pytest.mark.parametrize(("vol", "msg"), [
    ("/nonexistent-dir-xyz:/x", "no such file"),
    ("/tmp:rel", "absolute"),
    ("/tmp:/x:bogus", "unsupported option"),
    ("na/me:/x", "invalid volume name"),
    ("rel", "absolute"),
    (":/x", "empty source"),
])
def test_volume_errors(vol: str, msg: str) -> None:
    with pytest.raises(RootlessError, match=msg):
        build(volumes=(vol,))


def test_volume_refs_named_anonymous_and_image_volumes() -> None:
    opts = RunOptions(image="img", volumes=("data:/var/lib/db:ro,nocopy", "/scratch", "/tmp:/bound"),
                      mounts=("type=volume,src=other,dst=/o,volume-nocopy", "type=volume,dst=/anon2"),
                      tmpfs=("/covered-by-tmpfs",))
    cfg = {"Volumes": {"/var/lib/db": {}, "/img/vol": {}, "/bound": {}, "/covered-by-tmpfs": {}}}
    refs = specgen.volume_refs(opts, cfg, "/")
    by = {r.destination: r for r in refs}
    assert by["/var/lib/db"] == specgen.VolumeRef("data", "/var/lib/db", ("ro", "nocopy"))
    assert by["/scratch"] == specgen.VolumeRef(None, "/scratch")
    assert by["/o"] == specgen.VolumeRef("other", "/o", ("nocopy",))
    assert by["/anon2"].name is None
    # the image's VOLUME gets an anonymous volume unless a mount of the run covers it
    assert by["/img/vol"] == specgen.VolumeRef(None, "/img/vol")
    assert set(by) == {"/var/lib/db", "/scratch", "/o", "/anon2", "/img/vol"}


def test_volume_mounts_join_the_spec_and_named_volumes_are_not_host_paths() -> None:
    from rootless.spec import Mount

    vm = Mount("/db", "bind", "/store/volumes/data/_data", ("rbind", "copyup"))
    spec = specgen.build({"Cmd": ["sh"]}, RunOptions(image="img", volumes=("data:/db",)), PLAN, container_id=CID,
                         rundir="/run/x", uid_map=STORE_UIDS, gid_map=STORE_UIDS, host=HostInfo(uid=1000, gid=1000),
                         volume_mounts=(vm,))
    assert [m for m in spec.mounts if m.destination == "/db"] == [vm]


def test_read_only_adds_tmpfs() -> None:
    spec = build(read_only=True)
    assert spec.rootfs.readonly
    tmpfs = {m.destination for m in spec.mounts if m.type == "tmpfs"}
    assert {"/run", "/tmp", "/var/tmp"} <= tmpfs
    assert not build(read_only=True, read_only_tmpfs=False).mounts[-1].destination == "/var/tmp"
    assert not build().rootfs.readonly


def test_resolv_conf_only_with_a_network() -> None:
    text = "nameserver 127.0.0.53\nsearch lan\n"
    assert specgen.resolv_conf(text, "none") is None  # Podman writes none without a network
    assert specgen.resolv_conf(text, "host") == text
    assert "resolv.conf" not in {f.name for f in build().files}


def test_unsupported_network() -> None:
    with pytest.raises(RootlessError, match="not supported"):
        build(network="bridge")


def test_slirp4netns_network() -> None:
    spec = build(network="slirp4netns:allow_host_loopback=true", publish=("127.0.0.1::80", "5353:53/udp"),
                 add_host=("db:10.1.1.1",), host=HostInfo(resolv_conf="nameserver 127.0.0.53\n"))
    assert spec.network.mode == "slirp4netns" and "network" in spec.namespaces
    assert spec.network.options == (("allow_host_loopback", "true"),)
    assert [(p.host_ip, p.host_port, p.container_port, p.protocol) for p in spec.network.ports] == [
        ("127.0.0.1", 0, 80, "tcp"), ("", 5353, 53, "udp")]
    files = {f.name: f.content for f in spec.files}
    assert files["resolv.conf"] == "nameserver 10.0.2.3\n"
    assert "10.0.2.2\thost.containers.internal" in files["hosts"] and "10.1.1.1\tdb" in files["hosts"]
    assert spec.mounts[-1].destination == "/etc/resolv.conf"
    exposed = build({"Cmd": ["sh"], "ExposedPorts": {"80/tcp": {}}}, network="slirp4netns", publish_all=True)
    assert [(p.host_port, p.container_port) for p in exposed.network.ports] == [(0, 80)]
    with pytest.raises(RootlessError, match="own network"):
        build(network="none", publish=("8080:80",))
    with pytest.raises(RootlessError, match="own network"):
        build(network="host", publish=("8080:80",))
    with pytest.raises(RootlessError, match="conflicting"):
        build(network="none", dns=("1.1.1.1",))


def test_slirp4netns_cidr_moves_the_forwarder_and_the_guest() -> None:
    # Podman's: the forwarder at .3 of the CIDR first, the container at .100 (recorded with podman 4.3)
    spec = build(network="slirp4netns:cidr=10.8.0.0/24",
                 host=HostInfo(resolv_conf="nameserver 127.0.0.53\nnameserver 10.255.255.53\n"))
    files = {f.name: f.content for f in spec.files}
    assert files["resolv.conf"] == "nameserver 10.8.0.3\nnameserver 10.255.255.53\n"
    assert f"10.8.0.100\t{CID[:12]}" in files["hosts"]
    # allow_host_loopback: the host is the CIDR's .2
    spec = build(network="slirp4netns:cidr=10.9.8.0/25,allow_host_loopback=true")
    files = {f.name: f.content for f in spec.files}
    assert files["resolv.conf"].startswith("nameserver 10.9.8.3\n")
    assert "10.9.8.2\thost.containers.internal" in files["hosts"]


# --------------------------------------------------------------------------- id maps

def test_keep_id_map() -> None:
    m = specgen.keep_id_map(STORE_UIDS, 1000)
    assert m == (IdMap(0, 100000, 1000), IdMap(1000, 1000, 1), IdMap(1001, 101000, 64536))
    assert sum(x.size for x in m) == 65537
    spec = build(userns="keep-id")
    assert spec.uid_map == m and spec.process.user == "1000:1000"
    split = (IdMap(0, 1000, 1), IdMap(1, 100000, 10), IdMap(11, 200000, 100))
    assert specgen.keep_id_map(split, 15) == (
        IdMap(0, 100000, 10), IdMap(10, 200000, 5), IdMap(15, 1000, 1), IdMap(16, 200005, 95))
    assert specgen.keep_id_map((IdMap(0, 1000, 1),), 1000) == (IdMap(1000, 1000, 1),)


FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
     +-- 192.0.2.0/24 2 0 2
           |-- 192.0.2.0
              /24 link UNICAST
           |-- 192.0.2.2
              /32 host LOCAL
        |-- 192.0.2.255
           /32 link BROADCAST
"""


def test_host_containers_internal_is_the_hosts_address() -> None:
    assert specgen._host_ip(FIB_TRIE) == "192.0.2.2"
    assert specgen._host_ip("") is None
    files = {f.name: f.content for f in build(network="slirp4netns", host=HostInfo(host_ip="192.0.2.2")).files}
    lines = files["hosts"].splitlines()
    assert lines[-2] == "192.0.2.2\thost.containers.internal" and lines[-1].startswith("10.0.2.100\t")
    files = {f.name: f.content for f in build(network="host", host=HostInfo(host_ip="192.0.2.2")).files}
    assert files["hosts"].splitlines()[-1] == "192.0.2.2\thost.containers.internal"


def test_keep_id_shift_shows_the_images_owners() -> None:
    shift = specgen.keep_id_shift(STORE_UIDS, 1000)
    # keep-id's 1000 is stored as the image's root (store 0), its 0..999 as 1..1000, the rest the same
    assert shift == (IdMap(0, 1, 1000), IdMap(1000, 0, 1), IdMap(1001, 1001, 64536))
    assert specgen.keep_id_shift((IdMap(0, 1000, 1),), 1000) == ()


def test_keep_id_reads_the_rootfs_through_fuse_overlayfs_or_refuses() -> None:
    spec = build(userns="keep-id")
    assert spec.rootfs.driver == "fuse-overlayfs" and spec.rootfs.uid_shift == specgen.keep_id_shift(STORE_UIDS, 1000)
    assert build().rootfs == PLAN
    # no silent fallback that would show the image's root as you
    missing = HostInfo(uid=1000, gid=1000, no_fuse_overlayfs="fuse-overlayfs is not installed")
    with pytest.raises(RootlessError, match="keep-id needs fuse-overlayfs.*fuse-overlayfs is not installed") as e:
        build(userns="keep-id", host=missing)
    assert "apt-get install fuse-overlayfs" in (e.value.hint or "")
    assert build(host=missing).rootfs == PLAN
    vfs = RootfsPlan("vfs", "/store/c/rootfs")
    with pytest.raises(RootlessError, match="vfs storage driver"):
        specgen.build({"Cmd": ["sh"]}, RunOptions(image="img", userns="keep-id"), vfs, container_id=CID,
                      rundir="/run/x", uid_map=STORE_UIDS, gid_map=STORE_UIDS, host=HostInfo(uid=1000, gid=1000))
    # one ID mapped (no subordinate IDs): every file is yours in any namespace, nothing to show otherwise
    one = (IdMap(0, 1000, 1),)
    spec = specgen.build({"Cmd": ["sh"]}, RunOptions(image="img", userns="keep-id"), vfs, container_id=CID,
                         rundir="/run/x", uid_map=one, gid_map=one, host=missing)
    assert spec.rootfs == vfs and spec.uid_map == (IdMap(1000, 1000, 1),)


# --------------------------------------------------------------------------- container:NAME namespaces


def _other(**kw: object):  # type: ignore[no-untyped-def]
    """A running container's Spec as the engine loads it for container:NAME (its own run dir)."""
    opts = RunOptions(image="img", hostname="side", network="slirp4netns", **kw)  # type: ignore[arg-type]
    keep = IdMap(0, 1, 1000), IdMap(1000, 1000, 1)
    return specgen.build({"Cmd": ["sh"]}, opts, PLAN, container_id="cd" * 32, rundir="/run/other",
                         uid_map=keep, gid_map=keep, host=HostInfo(uid=1000, gid=1000))


def test_shared_refs() -> None:
    opts = RunOptions(image="i", network="container:a", pid="container:b", ipc="private", uts="host")
    assert specgen.shared_refs(opts) == {"network": "a", "pid": "b"}
    with pytest.raises(RootlessError, match="no container named"):
        specgen.shared_refs(RunOptions(image="i", uts="container:"))


def test_container_network_joins_and_binds_the_others_files() -> None:
    other = _other()
    opts = RunOptions(image="img", network="container:a", pid="container:a")
    spec = specgen.build({"Cmd": ["sh"]}, opts, PLAN, container_id=CID, rundir="/run/x", uid_map=STORE_UIDS,
                         gid_map=STORE_UIDS, host=HostInfo(uid=1000, gid=1000),
                         shared={"network": other, "pid": other})
    assert spec.shared == (("network", other.id), ("pid", other.id))
    assert "network" not in spec.namespaces and "pid" not in spec.namespaces and "user" in spec.namespaces
    assert spec.network.mode == "container" and spec.sysctls == ()
    assert spec.uid_map == other.uid_map  # its user namespace, its maps
    binds = {m.destination: m.source for m in spec.mounts}
    assert binds["/etc/hosts"] == "/run/other/hosts" and binds["/etc/resolv.conf"] == "/run/other/resolv.conf"
    assert binds["/etc/hostname"] == "/run/x/hostname" and spec.hostname == CID[:12]
    assert {f.name for f in spec.files} == {".containerenv", "hostname"}
    assert next(m for m in spec.mounts if m.destination == "/sys").type == "sysfs"  # its namespace is ours to mount


def test_container_uts_takes_the_others_host_name() -> None:
    other = _other()
    opts = RunOptions(image="img", uts="container:a")
    spec = specgen.build({"Cmd": ["sh"]}, opts, PLAN, container_id=CID, rundir="/run/x", uid_map=STORE_UIDS,
                         gid_map=STORE_UIDS, host=HostInfo(uid=1000, gid=1000), shared={"uts": other})
    assert spec.hostname == "side" and "HOSTNAME=side" in spec.process.env and "uts" not in spec.namespaces
    assert "network" in spec.namespaces  # a network of its own still


@pytest.mark.parametrize(("kw", "needle"), [
    ({"network": "container:a", "dns": ("1.1.1.1",)}, "dns and the network mode: container"),
    ({"network": "container:a", "add_host": ("x:1.2.3.4",)}, "extra host entries"),
    ({"network": "container:a", "publish": ("8080:80",)}, "published by that container"),
    ({"network": "container:a", "sysctl": ("net.ipv4.ip_forward=1",)}, "network namespace"),
    ({"uts": "container:a", "hostname": "x"}, "--hostname and --uts container:a"),
    ({"pid": "container:a", "userns": "keep-id"}, "--userns keep-id"),
])
def test_container_namespaces_refuse(kw: dict, needle: str) -> None:
    opts = RunOptions(image="img", **kw)
    shared = dict.fromkeys(specgen.shared_refs(opts), _other())
    with pytest.raises(RootlessError, match=needle):
        specgen.build({"Cmd": ["sh"]}, opts, PLAN, container_id=CID, rundir="/run/x", uid_map=STORE_UIDS,
                      gid_map=STORE_UIDS, host=HostInfo(uid=1000, gid=1000), shared=shared)


def test_volume_U_is_kept_for_the_runtime(tmp_path: Path) -> None:
    m = specgen.parse_volume(f"{tmp_path}:/d:U,ro", "/")
    assert m.options == ("rbind", "U", "ro")  # type: ignore[union-attr]
    ref = specgen.parse_volume("data:/d:U", "/")
    assert isinstance(ref, specgen.VolumeRef) and ref.options == ("U",)


def test_userns_nomap_is_refused_with_the_reason() -> None:
    with pytest.raises(RootlessError, match="nomap is not supported: the image's files are stored as your own ID"):
        build(userns="nomap")
    with pytest.raises(RootlessError, match="'bogus' is not supported"):
        build(userns="bogus")
