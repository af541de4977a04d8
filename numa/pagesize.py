"""Hugepage sizes as people write them (``2Mi``, ``1Gi``, ``2048kB``) -> kibibytes.

Kubernetes spells them ``hugepages-2Mi``; sysfs spells them ``hugepages-2048kB``; the
kernel command line spells them ``2M``/``1G``. All mean powers of two (sysfs ``kB`` is
KiB), so ``2M``, ``2Mi`` and ``2048kB`` are the same size.
"""

from __future__ import annotations

import re

_QUANTITY = re.compile(r"^\s*(?:hugepages-)?(\d+)\s*([A-Za-z]*)\s*$")

_UNIT_KB = {
    "": None,  # a bare number is bytes, as in a k8s quantity
    "b": None,
    "k": 1, "kb": 1, "ki": 1, "kib": 1,
    "m": 1024, "mb": 1024, "mi": 1024, "mib": 1024,
    "g": 1024**2, "gb": 1024**2, "gi": 1024**2, "gib": 1024**2,
    "t": 1024**3, "tb": 1024**3, "ti": 1024**3, "tib": 1024**3,
}


def page_size_kb(text: str | int) -> int:
    """``"2Mi"`` -> 2048, ``"1Gi"`` -> 1048576, ``"2048kB"`` -> 2048, ``2097152`` (bytes) -> 2048.

    Raises ValueError saying what was wrong: an unknown unit, a size that is not a power
    of two, or one below 4 KiB (no hugepage size is).
    """
    if isinstance(text, bool):
        raise ValueError(f"hugepage size {text!r} is not a size; write e.g. 2Mi or 1Gi")
    if isinstance(text, int):
        number, unit = text, ""
    else:
        match = _QUANTITY.match(text) if isinstance(text, str) else None
        if not match:
            raise ValueError(
                f"hugepage size {text!r} is not a size; write e.g. 2Mi, 1Gi or 2048kB"
            )
        number, unit = int(match.group(1)), match.group(2)
    key = unit.lower()
    if key not in _UNIT_KB:
        raise ValueError(
            f"hugepage size {text!r}: unknown unit {unit!r}; use Ki, Mi, Gi (or kB, M, G)"
        )
    factor = _UNIT_KB[key]
    if factor is None:
        if number % 1024:
            raise ValueError(f"hugepage size {text!r} bytes is not a whole number of KiB")
        size_kb = number // 1024
    else:
        size_kb = number * factor
    if size_kb < 4 or size_kb & (size_kb - 1):
        raise ValueError(
            f"hugepage size {text!r} = {size_kb} KiB is not a power of two of at least 4 KiB; "
            "common sizes are 2Mi and 1Gi"
        )
    return size_kb


def format_page_size(size_kb: int) -> str:
    """2048 -> ``"2Mi"``, 1048576 -> ``"1Gi"``, 64 -> ``"64Ki"`` (the Kubernetes spelling)."""
    for unit, factor in (("Ti", 1024**3), ("Gi", 1024**2), ("Mi", 1024)):
        if size_kb >= factor and size_kb % factor == 0:
            return f"{size_kb // factor}{unit}"
    return f"{size_kb}Ki"
