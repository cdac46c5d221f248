"""Subordinate ids (/etc/subuid, /etc/subgid) and writing a user namespace's id maps.

The store always uses one fixed mapping, as rootless Podman does: container id 0 is the
user's own id, and container ids 1.. are the user's subordinate ranges laid end to end.
An unprivileged process may only map its own id (user_namespaces(7), "Defining user and
group ID mappings"), so anything larger goes through the setuid helpers newuidmap(1) and
newgidmap(1), which check the ranges against /etc/subuid and /etc/subgid.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

from rootless.errors import NamespaceError
from rootless.record import dataclass

SUBUID = Path("/etc/subuid")
SUBGID = Path("/etc/subgid")

# The kernel accepts at most 340 lines in uid_map/gid_map (since Linux 4.15).
MAX_MAP_LINES = 340
# What usermod suggests and most distributions allocate per user.
DEFAULT_RANGE_SIZE = 65536
_FIRST_SUBID = 100000

_HELPER_DIRS = ("/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin", "/usr/local/sbin")


@dataclass(frozen=True)
class IdMapping:
    container_id: int
    host_id: int
    size: int

    def line(self) -> str:
        return f"{self.container_id} {self.host_id} {self.size}"


@dataclass(frozen=True)
class SubIdRange:
    start: int
    count: int

    @property
    def end(self) -> int:
        """The last id of the range (inclusive), as usermod(8) writes ranges."""
        return self.start + self.count - 1


@dataclass(frozen=True)
class IdMaps:
    uid_map: tuple[IdMapping, ...]
    gid_map: tuple[IdMapping, ...]
    single: bool  # True when either map holds only the user's own id

    def to_json(self) -> dict[str, object]:
        def rows(ms: tuple[IdMapping, ...]) -> list[dict[str, int]]:
            return [{"container_id": m.container_id, "host_id": m.host_id, "size": m.size} for m in ms]

        return {"uid_map": rows(self.uid_map), "gid_map": rows(self.gid_map), "single": self.single}


# --- /etc/subuid and /etc/subgid ------------------------------------------------------


def parse_subid(text: str, user: str, uid: int) -> tuple[SubIdRange, ...]:
    """The ranges of ``name:start:count`` lines naming *user* or its numeric *uid*, in file order.

    subuid(5): the first field is a login name or a numeric id; malformed lines are
    ignored, as newuidmap ignores them.
    """
    ranges: list[SubIdRange] = []
    who = {user, str(uid)}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) != 3 or parts[0] not in who:
            continue
        try:
            start, count = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if start < 0 or count <= 0:
            continue
        ranges.append(SubIdRange(start, count))
    return tuple(ranges)


def read_subid(path: Path, user: str, uid: int) -> tuple[SubIdRange, ...]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return ()
    except OSError as e:
        raise NamespaceError(f"read {path}: {e.strerror}",
                             f"make {path} readable (it is normally mode 0644)") from None
    return parse_subid(text, user, uid)


def free_range(texts: Iterable[str], size: int = DEFAULT_RANGE_SIZE) -> SubIdRange:
    """A range of *size* ids above every range already listed in the given subuid/subgid texts.

    Used only to suggest a usermod command that will not overlap another user's ids.
    """
    top = _FIRST_SUBID
    for text in texts:
        for raw in text.splitlines():
            parts = raw.strip().split(":")
            if len(parts) == 3 and not parts[0].startswith("#"):
                try:
                    top = max(top, int(parts[1]) + int(parts[2]))
                except ValueError:
                    continue
    # useradd(8) allocates the same way: the next ids after every allocated range.
    return SubIdRange(top, size)


def usermod_fix(user: str, subuid: Path = SUBUID, subgid: Path = SUBGID) -> str:
    texts = []
    for p in (subuid, subgid):
        try:
            texts.append(p.read_text())
        except OSError:
            pass
    r = free_range(texts)
    return f"usermod --add-subuids {r.start}-{r.end} --add-subgids {r.start}-{r.end} {user}"


# --- the store's mapping -------------------------------------------------------------


def build_map(own_id: int, ranges: Sequence[SubIdRange]) -> tuple[IdMapping, ...]:
    """0 → own id, then 1.. → each subordinate range in order (Podman's rootless mapping)."""
    out = [IdMapping(0, own_id, 1)]
    next_id = 1
    for r in ranges:
        if len(out) >= MAX_MAP_LINES:
            break
        out.append(IdMapping(next_id, r.start, r.count))
        next_id += r.count
    return tuple(out)


def store_maps(uid: int, gid: int, user: str, subuid: Path = SUBUID, subgid: Path = SUBGID) -> IdMaps:
    uid_map = build_map(uid, read_subid(subuid, user, uid))
    gid_map = build_map(gid, read_subid(subgid, user, uid))
    return IdMaps(uid_map, gid_map, single=len(uid_map) == 1 or len(gid_map) == 1)


def within(mapping: Sequence[IdMapping], outer: Sequence[IdMapping]) -> tuple[IdMapping, ...]:
    """*mapping* (container → host IDs) as the map of a user namespace made inside one mapped by
    *outer* (its IDs → host IDs): container → *outer*'s IDs, each range cut where *outer*'s
    ranges meet. ValueError names a host ID *outer* does not map."""
    out: list[IdMapping] = []
    for m in mapping:
        cid, hid, left = m.container_id, m.host_id, m.size
        while left:
            o = next((o for o in outer if o.host_id <= hid < o.host_id + o.size), None)
            if o is None:
                raise ValueError(f"host ID {hid} is not mapped in the enclosing user namespace")
            n = min(left, o.host_id + o.size - hid)
            out.append(IdMapping(cid, o.container_id + hid - o.host_id, n))
            cid, hid, left = cid + n, hid + n, left - n
    return tuple(out)


def current_user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return os.environ.get("USER") or str(os.getuid())


def current_store_maps(subuid: Path = SUBUID, subgid: Path = SUBGID) -> IdMaps:
    return store_maps(os.getuid(), os.getgid(), current_user(), subuid, subgid)


def single_mapping_warning(maps: IdMaps, user: str) -> tuple[str, str, str]:
    """(key, message, hint) of the one warning a single-ID store gives: once per store."""
    lost = "uids" if len(maps.uid_map) == 1 else ""
    if len(maps.gid_map) == 1:
        lost = f"{lost} and gids" if lost else "gids"
    files = "/etc/subuid" if len(maps.uid_map) == 1 else ""
    if len(maps.gid_map) == 1:
        files = f"{files} and /etc/subgid" if files else "/etc/subgid"
    return (
        f"single-id-mapping:{lost}",
        f"no subordinate {lost} for {user} in {files}: single-id mapping (container root is you, "
        f"uid {maps.uid_map[0].host_id}; files of other owners in images are owned by root instead)",
        f"as root: {usermod_fix(user)}, then remove the store and pull again",
    )


def short_range(maps: IdMaps) -> int | None:
    """The number of IDs the smaller map holds when it is under the 65536 an image may use
    (0-65535: Debian's nobody is 65534), else None."""
    size = min(sum(m.size for m in maps.uid_map), sum(m.size for m in maps.gid_map))
    return size if size < DEFAULT_RANGE_SIZE else None


# --- applying a mapping to a process ---------------------------------------------------


def find_helper(name: str) -> str | None:
    """Look *name* up in $PATH, then in the system directories (sbin is often not in a user's PATH)."""
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    for d in (*dirs, *_HELPER_DIRS):
        p = os.path.join(d, name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def helper_privileged(path: str) -> bool:
    """newuidmap needs CAP_SETUID in the parent namespace: setuid root or file capabilities."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if st.st_mode & stat.S_ISUID and st.st_uid == 0:
        return True
    try:
        return len(os.getxattr(path, "security.capability")) > 0
    except OSError:
        return False


def helper_argv(helper: str, pid: int, mapping: Sequence[IdMapping]) -> list[str]:
    """newuidmap(1): ``newuidmap pid uid loweruid count [uid loweruid count]...``."""
    argv = [helper, str(pid)]
    for m in mapping:
        argv += [str(m.container_id), str(m.host_id), str(m.size)]
    return argv


def _needs_helper(mapping: Sequence[IdMapping], own_id: int) -> bool:
    return not (len(mapping) == 1 and mapping[0].host_id == own_id and mapping[0].size == 1)


def _write_proc(pid: int, name: str, text: str) -> None:
    path = f"/proc/{pid}/{name}"
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise NamespaceError(f"write {path}: {e.strerror}",
                             "the process must be in a new user namespace that has no mapping yet") from None


def _run_helper(kind: str, pid: int, mapping: Sequence[IdMapping], user: str,
                subuid: Path, subgid: Path) -> None:
    import subprocess

    name = "newuidmap" if kind == "uid" else "newgidmap"
    helper = find_helper(name)
    if helper is None:
        raise NamespaceError(f"{name} not found", "install the uidmap package (apt-get install uidmap)")
    argv = helper_argv(helper, pid, mapping)
    try:
        res = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, check=False)
    except OSError as e:
        raise NamespaceError(f"run {helper}: {e.strerror}", "reinstall the uidmap package") from None
    if res.returncode == 0:
        return
    err = " ".join(res.stderr.decode(errors="replace").split()) or f"exit status {res.returncode}"
    shown = " ".join(argv[1:])
    if not helper_privileged(helper):
        raise NamespaceError(
            f"{name} {shown} failed: {err}",
            f"{helper} is neither setuid root nor has file capabilities: run `chmod u+s {helper}` "
            f"as root or reinstall the uidmap package",
        )
    subid = subuid if kind == "uid" else subgid
    listed = read_subid(subid, user, os.getuid())
    if "not allowed" in err or not all(_covered(m, listed) for m in mapping[1:]):
        raise NamespaceError(
            f"{name} {shown} failed: {err}",
            f"the range is not listed for {user} in {subid}: run as root "
            f"`{usermod_fix(user, subuid, subgid)}`",
        )
    raise NamespaceError(f"{name} {shown} failed: {err}")


def _covered(m: IdMapping, ranges: Sequence[SubIdRange]) -> bool:
    return any(r.start <= m.host_id and m.host_id + m.size <= r.start + r.count for r in ranges)


def apply(pid: int, maps: IdMaps, user: str | None = None,
          subuid: Path = SUBUID, subgid: Path = SUBGID) -> None:
    """Write the uid and gid maps of *pid*, which has just unshared its user namespace.

    A map of only our own id is written directly; the kernel then requires
    /proc/PID/setgroups to be "deny" before an unprivileged gid_map write
    (user_namespaces(7), "Interaction with system calls that change process UIDs or GIDs").
    """
    who = user or current_user()
    if _needs_helper(maps.uid_map, os.geteuid()):
        _run_helper("uid", pid, maps.uid_map, who, subuid, subgid)
    else:
        _write_proc(pid, "uid_map", f"{maps.uid_map[0].line()}\n")
    if _needs_helper(maps.gid_map, os.getegid()):
        _run_helper("gid", pid, maps.gid_map, who, subuid, subgid)
    else:
        _write_proc(pid, "setgroups", "deny")
        _write_proc(pid, "gid_map", f"{maps.gid_map[0].line()}\n")


def map_text(pid: int | str = "self") -> tuple[str, str]:
    """The (uid_map, gid_map) text of a process, as the kernel shows it from our namespace."""
    return (Path(f"/proc/{pid}/uid_map").read_text(), Path(f"/proc/{pid}/gid_map").read_text())
