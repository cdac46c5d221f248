"""The context built once in cli.py and passed down: config, layout, log. No module globals."""

from __future__ import annotations

import sys
from typing import TextIO

from rootless.config import Config
from rootless.layout import Layout
from rootless.record import dataclass, field

LEVELS = {"debug": 10, "info": 20, "warn": 30, "warning": 30, "error": 40}


@dataclass
class Log:
    level: int = 30
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    _said: set[str] = field(default_factory=set)
    store: Layout | None = None  # where warnings said once per store are recorded
    _pending: list[str] = field(default_factory=list)

    def debug(self, msg: str) -> None:
        if self.level <= 10:
            print(f"DEBU {msg}", file=self.stream)

    def info(self, msg: str) -> None:
        if self.level <= 20:
            print(f"INFO {msg}", file=self.stream)

    def warn(self, msg: str, hint: str | None = None) -> None:
        if self.level <= 30:
            print(f"Warning: {msg}", file=self.stream)
            if hint:
                print(f"Hint: {hint}", file=self.stream)

    def note(self, msg: str) -> None:
        """A line for the person at the terminal whatever the level (a pull's summary): the front
        end that made this Log decides where it goes."""
        print(msg, file=self.stream)

    def warn_once(self, key: str, msg: str, hint: str | None = None, *, store: bool = False) -> None:
        """A fallback says once what was lost and how to get it back: once per command, and with
        ``store`` once per store (its record lists the warnings given, so *key* should name the
        state warned about: a changed state warns again)."""
        if key in self._said:
            return
        self._said.add(key)
        if store and self.store is not None and self.level <= 30:
            if not self.store.root.is_dir():
                self._pending.append(key)  # recorded when this command creates the store
            elif not self.store.note_warning(key):
                return
        self.warn(msg, hint)

    def store_created(self) -> None:
        """The store exists now: record the warnings this command gave before it did."""
        if self.store is not None:
            for key in self._pending:
                self.store.note_warning(key)
        self._pending.clear()


@dataclass
class Context:
    config: Config
    layout: Layout
    log: Log


def build(log_level: str = "warn", root: str | None = None, runroot: str | None = None,
          cgroup_manager: str | None = None, storage_driver: str | None = None,
          events_backend: str | None = None, *, lenient: bool = False) -> Context:
    """The context for the global options (`--log-level`, `--root`, `--runroot`, `--cgroup-manager`,
    `--storage-driver`, `--events-backend`).

    ``lenient`` (doctor, `system migrate`): this environment's run root even when the store
    recorded another, and the defaults when the config file is bad: doctor reports both as
    checks of their own, migrate moves the store."""
    import os

    from rootless import config as cfg
    from rootless.errors import RootlessError
    from rootless.layout import config_file

    log = Log(level=LEVELS[log_level])
    layout = (Layout.default if lenient else Layout.for_store)(root, runroot)
    log.store = layout
    if layout.runroot_fallback:
        log.warn_once(f"runroot:{layout.runroot}", f"{layout.fallback_reason}: using {layout.runroot}",
                      "log in through a session that creates /run/user/$UID (pam_systemd), or have root "
                      "create it owned by you", store=True)
    # the fallback run root may be anybody's directory in /tmp: no cached config from there
    try:
        config = cfg.load(config_file(), cache=None if layout.runroot_fallback else layout.config_cache,
                          required=bool(os.environ.get("ROOTLESS_CONFIG")))  # a named file must exist
    except RootlessError:
        if not lenient:
            raise
        config = cfg.Config()
    if cgroup_manager:
        if cgroup_manager not in ("systemd", "cgroupfs"):
            raise RootlessError(f"--cgroup-manager {cgroup_manager!r}: must be systemd or cgroupfs")
        from rootless.record import replace

        config = replace(config, cgroup_manager=cgroup_manager)
    if storage_driver:
        from rootless.config import STORAGE_DRIVERS
        from rootless.record import replace

        if storage_driver not in STORAGE_DRIVERS:
            raise RootlessError(f"--storage-driver {storage_driver!r}: must be one of {', '.join(STORAGE_DRIVERS)}")
        config = replace(config, storage_driver=storage_driver)
    if events_backend:
        from rootless.record import replace

        if events_backend not in ("file", "none"):
            raise RootlessError(f"--events-backend {events_backend!r}: must be file or none",
                                hint="journald is not used: the events log is a file in the run root")
        config = replace(config, events_logger=events_backend)
    return Context(config=config, layout=layout, log=log)
