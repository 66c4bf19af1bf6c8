"""Plain-text formatting shared by every stage (one percent formatter for tables, summaries and notes)."""
from __future__ import annotations

from typing import Any


def percent(x: Any, digits: int = 1, *, width: int = 0, signed: bool = False, suffix: str = "%",
            missing: str = "–") -> str:
    """A share as percent: 0.1234 -> '12.3%'; None or NaN -> `missing`.

    `width` pads the number (not the suffix), `signed` prints '+' for gains, `suffix=""` gives
    percentage points for differences.
    """
    if x is None or (isinstance(x, float) and x != x):
        return missing
    sign = "+" if signed else ""
    return f"{100.0 * float(x):{sign}{width}.{digits}f}{suffix}"
