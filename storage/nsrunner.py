"""How storage code that must run as namespace-root is invoked.

Unpacking a layer has to chown files to the user's subordinate IDs and mknod overlay
whiteouts; only root inside the store's user namespace may do that. The store
therefore names the function ("storage.layers:unpack") and passes JSON-able keyword
arguments; a NamespaceRunner (rootless.runtime.userns.StoreNamespace) runs it in a
worker inside that namespace. The functions so called import only the stdlib,
zstandard and rootless.errors.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class NamespaceRunner(Protocol):
    def call(self, func: str, **kwargs: Any) -> Any:
        """Run ``"package.module:function"(**kwargs)`` as namespace-root and return its result.

        Arguments and result are JSON-able; a RootlessError raised by the function is
        re-raised as the same subclass. Thread-safe.
        """
        ...


def resolve(func: str) -> Callable[..., Any]:
    """The function named ``"package.module:function"``."""
    module, sep, name = func.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"function reference {func!r} is not 'package.module:function'")
    obj = getattr(importlib.import_module(module), name)
    if not callable(obj):
        raise ValueError(f"{func} is not callable")
    return obj  # type: ignore[no-any-return]


class LocalRunner:
    """Runs the function in this process, without a namespace (unit tests).

    Arguments and result make the same JSON round trip as with a real runner, so a
    test catches what a worker process could not carry.
    """

    def call(self, func: str, **kwargs: Any) -> Any:
        kwargs = json.loads(json.dumps(kwargs))
        return json.loads(json.dumps(resolve(func)(**kwargs)))
