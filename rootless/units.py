"""Byte counts for people, in decimal units as Podman and Docker print them (go-units)."""

from __future__ import annotations


def decimal_size(n: float, fmt: str = ".3g", sep: str = " ") -> str:
    """``n`` bytes in B, kB, MB, GB, TB or PB (1000s): whole bytes, else ``fmt`` digits.

    `images` prints ``5.83 MB`` (the default), `stats` ``67.11MB`` (``".4g"``, no space),
    progress lines ``12.3 MB`` (``".1f"``)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            break
        n /= 1000
    return f"{n:.0f}{sep}B" if unit == "B" else f"{n:{fmt}}{sep}{unit}"
