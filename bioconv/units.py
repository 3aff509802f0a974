"""Parse physical quantities given on the command line ("100ms", "200Hz", "0.1 ms")."""

from __future__ import annotations

import re

from brian2 import Hz, Quantity, kHz, ms, second, us

_UNITS = {"s": second, "ms": ms, "us": us, "hz": Hz, "khz": kHz}
_DIMENSION = {"time": ("s", "ms", "us"), "rate": ("hz", "khz")}


def parse_quantity(text: str, kind: str) -> Quantity:
    """``parse_quantity("100ms", "time") -> 100*ms``; raises ValueError naming the fix."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]+)\s*", str(text))
    allowed = _DIMENSION[kind]
    if not match or match.group(2).lower() not in allowed:
        raise ValueError(
            f"{text!r} is not a {kind} with a unit; write e.g. "
            + ("'100ms' or '0.1ms'" if kind == "time" else "'200Hz'")
            + f" (units: {', '.join(allowed)})"
        )
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


def parse_time(text: str) -> Quantity:
    return parse_quantity(text, "time")


def parse_rate(text: str) -> Quantity:
    return parse_quantity(text, "rate")
