"""The store's namespace, started on first use: what removing a container layer or a volume needs,
without loading the runtime that starts containers (a `rootless rm` loads only this)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rootless.context import Context


class LazyStoreNamespace:
    """storage's NamespaceRunner that starts the store's namespace only when first called:
    preparing and removing a container layer usually needs none, and importing
    rootless.runtime.userns alone costs milliseconds of start-up."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.ns: Any = None

    def call(self, func: str, **kwargs: Any) -> Any:
        if self.ns is None:
            from rootless.runtime.userns import StoreNamespace

            self.ns = StoreNamespace(self.ctx.layout, self.ctx.log)
        return self.ns.call(func, **kwargs)

    def __enter__(self) -> LazyStoreNamespace:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.ns is not None:
            self.ns.close()
            self.ns = None
