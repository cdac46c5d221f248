"""``--user name|uid[:group|gid]`` resolved against a container's /etc/passwd and /etc/group.

The rules are those of the OCI runtimes that Podman and Docker use (runc's libcontainer
GetExecUser, crun's equivalent): a name must exist; a number need not; without an explicit
group the passwd entry's gid is the primary group and every group listing the user's name
is a supplementary group; with an explicit group there are no supplementary groups. HOME
comes from the passwd entry, "/" when there is none.

Pure functions over file text, so the runtime's child can call them after mounting the
rootfs and the unit tests without one.
"""

from __future__ import annotations

from rootless.errors import RootlessError
from rootless.record import dataclass

MAX_ID = (1 << 31) - 1


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class ExecUser:
    uid: int
    gid: int
    additional_gids: tuple[int, ...]
    home: str
    name: str | None  # the passwd name, when there is an entry


def _records(text: str, min_fields: int) -> list[list[str]]:
    """The colon-separated records of a passwd(5)/group(5) file; comments, blank lines and
    records too short or with a non-numeric ID field are skipped, as getpwent(3) skips them."""
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        f = line.split(":")
        if len(f) >= min_fields and all(x.isascii() and x.isdigit() for x in f[2:min_fields]):
            out.append(f)
    return out


def parse_passwd(text: str) -> list[PasswdEntry]:
    """passwd(5) lines; malformed ones are skipped, as getpwent(3) skips them."""
    return [PasswdEntry(f[0], int(f[2]), int(f[3]), f[5] if len(f) > 5 else "") for f in _records(text, 4)]


def parse_group(text: str) -> list[GroupEntry]:
    """group(5) lines: ``name:password:gid:member,member``."""
    out = []
    for f in _records(text, 3):
        gid = int(f[2])
        members = tuple(m.strip() for m in f[3].split(",") if m.strip()) if len(f) > 3 else ()
        out.append(GroupEntry(f[0], gid, members))
    return out


def _number(text: str) -> int | None:
    if not text.isdigit():
        return None
    n = int(text)
    if n > MAX_ID:
        raise RootlessError(f"user or group id {text} is out of range (0 to {MAX_ID})")
    return n


def resolve(spec: str, passwd: str | None, group: str | None) -> ExecUser:
    """Resolve *spec* (``""`` means root) given the texts of /etc/passwd and /etc/group (None: absent)."""
    user_arg, _, group_arg = spec.partition(":")
    uid_arg = _number(user_arg)
    gid_arg = _number(group_arg) if group_arg else None
    users = parse_passwd(passwd or "")
    if user_arg == "":
        match = next((u for u in users if u.uid == 0), None)
    elif uid_arg is not None:
        match = next((u for u in users if u.uid == uid_arg), None)
    else:
        match = next((u for u in users if u.name == user_arg), None)
    uid, gid, home, name = 0, 0, "/", None
    if match is not None:
        uid, gid, home, name = match.uid, match.gid, match.home or "/", match.name
    elif user_arg:
        if uid_arg is None:
            raise RootlessError(f"unable to find user {user_arg}: no matching entries in passwd file",
                                "use a numeric uid, or a user listed in the image's /etc/passwd")
        uid = uid_arg
    extra: tuple[int, ...] = ()
    if group_arg:
        groups = parse_group(group or "")
        if gid_arg is None:
            g = next((g for g in groups if g.name == group_arg), None)
            if g is None:
                raise RootlessError(f"unable to find group {group_arg}: no matching entries in group file",
                                    "use a numeric gid, or a group listed in the image's /etc/group")
            gid = g.gid
        else:
            gid = gid_arg
    elif name is not None:
        seen: list[int] = []
        for g in parse_group(group or ""):
            if name in g.members and g.gid not in seen:
                seen.append(g.gid)
        extra = tuple(seen)
    return ExecUser(uid, gid, extra, home, name)
