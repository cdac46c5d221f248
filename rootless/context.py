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

    def debug(self, msg: str) -> None:
        if self.level <= 10:
            print(f"DEBU {msg}", file=self.stream)

    def info(self, msg: str) -> None:
        if self.level <= 20:
            print(f"INFO {msg}", file=self.stream)

    def warn(self, msg: str) -> None:
        if self.level <= 30:
            print(f"Warning: {msg}", file=self.stream)

    def warn_once(self, key: str, msg: str) -> None:
        """A fallback says once what was lost and how to get it back."""
        if key not in self._said:
            self._said.add(key)
            self.warn(msg)


@dataclass
class Context:
    config: Config
    layout: Layout
    log: Log
