"""execvp(3)'s PATH search, shared by `run`, `exec` and `unshare`.

Unlike execvp, a directory that cannot be searched is skipped, not fatal: root of a user
namespace holds no rights over directories owned by unmapped IDs, so a PATH naming
/root/bin must not turn `command not found` into EACCES. A file that exists but is not
executable is returned anyway, so execve(2) reports EACCES for it, as the shells do.
"""

from __future__ import annotations

import errno
import os
import stat


def find_executable(name: str, path: str) -> str:
    """The file ``name`` names, looked up in ``path`` when it holds no slash."""
    if "/" in name:
        return name
    not_exec: str | None = None
    for d in path.split(":"):
        candidate = os.path.join(d or ".", name)
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        if os.access(candidate, os.X_OK):
            return candidate
        not_exec = not_exec or candidate
    if not_exec is not None:
        return not_exec  # execve reports EACCES for it, as the shells do
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)
