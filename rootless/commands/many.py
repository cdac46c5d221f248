"""Commands that act on many containers at once (start, stop, kill, rm, pause...): each one named in
turn, Podman's way of going on after a failure and reporting every error at the end."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from rootless.errors import RootlessError
from rootless.options import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from rootless.context import Context
    from rootless.options import Args


def each(ctx: Context, names: list[str], action: Callable[[Context, str], object], *,
         missing_code: int | None = None, echo: bool = True) -> int:
    """Apply ``action`` to each container named; errors are reported at the end (Podman goes on
    with the other containers), the last one picks the exit status. ``missing_code``: the exit
    status for a container that does not exist (0: none is an error; None: as any error)."""
    from rootless.runtime.state import NoSuchContainer

    errors: list[RootlessError] = []
    for ref in names:
        try:
            action(ctx, ref)
            if echo:
                print(ref)
        except NoSuchContainer as e:
            if missing_code is None:
                errors.append(e)
            elif missing_code != 0:
                e.exit_code = missing_code
                errors.append(e)
        except RootlessError as e:
            errors.append(e)
    for err in errors[:-1]:
        print(f"Error: {err.message}", file=sys.stderr)
    if errors:
        raise errors[-1]
    return 0


def refs(ctx: Context, a: Args, running_only: bool = False) -> list[str]:
    """The containers a command line names: CONTAINER... or, with --all, every one (every
    running one with ``running_only``)."""
    if a.all:
        from rootless import engine

        return [c.id for c in engine.containers(ctx, all_=not running_only)]
    if not a.container:
        raise UsageError("Invalid value: give at least one container name or ID, or --all")
    return list(a.container)
