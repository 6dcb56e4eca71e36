"""Numbers as text: the one home of the display rules the CLI, the report and the findings share.

Consumes: plain values (Python or NumPy numbers, None, NaN). Produces: strings. Guarantees:
the same number reads the same in a terminal table, a report table and a sentence kind of
its own (files keep full precision: CSVs, JSON). The rules:

- :func:`cell`, a table cell (CLI tables and report tables alike): missing (None, NaN) -> "";
  booleans -> yes/no; whole numbers (integers, and floats holding a count, below 1e12) with
  thousands separators always (5,000 parameters; 19,507 rows); other numbers of magnitude
  >= 1e6 or below 1e-3 in scientific notation with 4 significant digits (3.217e+06,
  4.200e-04), >= 1000 with separators and no decimals (1,235), else 4 significant digits
  (a log-loss 0.6931, an AUC 0.5123).
- :func:`num`, a number inside a sentence: 4 significant digits (p-values 2), never "-0".
- :func:`short`, a fitted exponent or coefficient inside a sentence: 3 significant digits.
- :func:`count`, a count inside a sentence: thousands separators (77,355 parameters).
- :func:`signed`, a difference: explicit sign, "+" when positive (zero stays "0").
- :func:`interval`, a confidence interval: "[lo, hi]", or ``missing`` ("n/a") without one.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["cell", "num", "short", "count", "signed", "interval"]

WHOLE_MAX = 1e12      # whole floats below this print as counts (FLOPs, means of equal counts)
SCI_HIGH, SCI_LOW = 1e6, 1e-3   # non-whole magnitudes outside [SCI_LOW, SCI_HIGH): scientific


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, numbers.Real) and math.isnan(float(value)))


def cell(value: Any) -> str:
    """One table cell (rules in the module docstring); non-numbers as ``str``."""
    if _is_missing(value):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if not isinstance(value, numbers.Real):
        return str(value)
    v = float(value)
    if math.isinf(v):
        return str(v)
    if v.is_integer() and abs(v) < WHOLE_MAX:
        return f"{int(v):,}"
    if abs(v) >= SCI_HIGH or abs(v) < SCI_LOW:
        return f"{v:.3e}"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"


def num(value: float, digits: int = 4) -> str:
    """A number for a sentence: ``digits`` significant digits, never "-0"."""
    text = f"{value:.{digits}g}"
    return "0" if text in ("-0", "0") else text


def short(value: float) -> str:
    """A fitted exponent or coefficient for a sentence: 3 significant digits, never "-0"."""
    return num(value, 3)


def count(value: float) -> str:
    """A count for a sentence: an integer with thousands separators."""
    return f"{int(value):,}"


def signed(value: float, as_text: Callable[[Any], str] = num) -> str:
    """A difference with its sign: ``as_text(value)`` with "+" in front when positive."""
    text = as_text(value)
    return text if text.startswith("-") or text == "0" else f"+{text}"


def interval(ci: Sequence[Any] | None, as_text: Callable[[Any], str] = num, missing: str = "n/a") -> str:
    """A confidence interval "[lo, hi]"; ``missing`` when there is none (None, empty, a
    missing bound)."""
    if ci is None or len(ci) < 2 or _is_missing(ci[0]) or _is_missing(ci[1]):
        return missing
    return f"[{as_text(ci[0])}, {as_text(ci[1])}]"
