"""What every benchmark's renderer shares: looking keys up, number formats, markdown tables and
paragraphs. A value a JSON lacks (or holds as NaN) prints as ``NM`` ("not measured")."""

from __future__ import annotations

import math
import textwrap

NM = "not measured"


def get(d, *path, default=None):
    """d[path[0]][path[1]]..., or default where any step is missing."""
    for key in path:
        if (
            isinstance(d, dict)
            and key in d
            or isinstance(d, (list, tuple))
            and isinstance(key, int)
            and -len(d) <= key < len(d)
        ):
            d = d[key]
        else:
            return default
    return d


def isnum(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def num(x, nd: int = 0) -> str:
    """1,234 (thousands separators)."""
    return f"{x:,.{nd}f}" if isnum(x) else NM


def pct(x, nd: int = 0) -> str:
    """A fraction as a percentage: 0.541 -> 54%."""
    return f"{100 * x:.{nd}f}%" if isnum(x) else NM


def fix(x, nd: int = 3) -> str:
    return f"{x:.{nd}f}" if isnum(x) else NM


def times(x, nd: int = 1) -> str:
    """A ratio: 6.0x."""
    return f"{x:.{nd}f}x" if isnum(x) else NM


def ms(seconds, nd: int = 1) -> str:
    return f"{1e3 * seconds:,.{nd}f} ms" if isnum(seconds) else NM


def sci(x) -> str:
    """A learning rate: 3.77e-04."""
    return f"{x:.2e}" if isnum(x) else NM


def ratio(a, b):
    return a / b if isnum(a) and isnum(b) and b else None


def span(values, fmt) -> str:
    """min-max of the numeric values ('a' when they agree), formatted; NM when none."""
    vals = [v for v in values if isnum(v)]
    if not vals:
        return NM
    lo, hi = fmt(min(vals)), fmt(max(vals))
    return lo if lo == hi else f"{lo}-{hi}"


def table(header: str | list[str], rows: list[list[str]]) -> str:
    """A markdown table; ``header`` is a list of cells or one string of them separated by "|"."""
    header = header.split("|") if isinstance(header, str) else header
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def para(*sentences: str) -> str:
    """One paragraph from the non-empty sentences, wrapped like the rest of the README."""
    text = " ".join(s.strip() for s in sentences if s and s.strip())
    return textwrap.fill(text, width=100, break_long_words=False, break_on_hyphens=False)


def bullets(items: list[str]) -> str:
    return "\n".join(
        textwrap.fill(
            i,
            width=100,
            initial_indent="- ",
            subsequent_indent="  ",
            break_long_words=False,
            break_on_hyphens=False,
        )
        for i in items
        if i
    )


def join_nonempty(*blocks: str) -> str:
    return "\n\n".join(b for b in blocks if b)
