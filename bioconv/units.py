"""Parse physical quantities given on the command line ("100ms", "200Hz", "0.1 ms")."""

from __future__ import annotations

import math
import re

from brian2 import Hz, Quantity, kHz, ms, second, us

_UNITS = {"s": second, "ms": ms, "us": us, "hz": Hz, "khz": kHz}
_DIMENSION = {"time": ("s", "ms", "us"), "rate": ("hz", "khz")}


def parse_quantity(text: str, kind: str, allow_zero: bool = False) -> Quantity:
    """``parse_quantity("100ms", "time") -> 100*ms``; raises ValueError naming the fix.

    Values must be > 0, or >= 0 with ``allow_zero`` (e.g. a refractory period of 0 ms)."""
    match = re.fullmatch(r"\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]+)\s*", str(text))
    allowed = _DIMENSION[kind]
    example = "'100ms' or '0.1ms'" if kind == "time" else "'200Hz'"
    if not match or match.group(2).lower() not in allowed:
        raise ValueError(f"{text!r} is not a {kind} with a unit; write e.g. {example} (units: {', '.join(allowed)})")
    value = float(match.group(1))
    if not math.isfinite(value) or (value > 0 and not math.isfinite(value * float(_UNITS[match.group(2).lower()]))):
        raise ValueError(f"{kind} {text!r} is too large (not a finite number); write e.g. {example}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{kind} {text!r} must be {bound} {match.group(2)}; write e.g. {example}")
    return value * _UNITS[match.group(2).lower()]


def parse_time(text: str, allow_zero: bool = False) -> Quantity:
    return parse_quantity(text, "time", allow_zero)


def parse_rate(text: str) -> Quantity:
    return parse_quantity(text, "rate")
