"""What every benchmark's renderer shares: looking keys up, number formats, markdown tables and
paragraphs. A value a JSON lacks (or holds as NaN) prints as ``NM`` ("not measured")."""

from __future__ import annotations

import math
import re
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


# ------------------------------------------------------------------------------------------------
# verdicts: a comparison said in a word, computed from the JSON. Each renderer states the criterion
# it uses (the criterion_* clauses) in the line that introduces its table or in the verdict
# column's header.
# ------------------------------------------------------------------------------------------------
WITHIN = "within noise"  # repeats recorded: the differences they allow have both signs
UNRESOLVED = "not resolved"  # one run each: inside the margin; a target: inside the repeats
ONE_RUN_FACTOR = 1.25  # one run each, no spread recorded: a ratio counts beyond 1.25x either way,
ONE_RUN_POINTS = 0.05  # a difference of two fractions beyond 5 percentage points
FASTER = ("faster", "slower")


def values(x) -> list[float]:
    """The finite numbers of ``x``: one number or a list of repeats."""
    xs = x if isinstance(x, (list, tuple)) else [x]
    return [v for v in xs if isnum(v)]


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def compare(a, b, *, paired: bool = False, points: bool = False):
    """``a`` against ``b`` from their repeats: (estimate, lowest, highest, repeats) of the ratio
    a / b, or with ``points`` of the difference a - b. Paired (a[i] and b[i] measured in the same
    round): the median, min and max of the per-round ratios; unpaired: the ratio of the medians,
    and the lowest and highest ratio of any repeat of a to any repeat of b. None where either has
    no value, where paired repeats differ in number, or (a ratio) where a value is <= 0."""
    av, bv = values(a), values(b)
    if paired:
        pairs = list(zip(av, bv)) if len(av) == len(bv) else []
    else:
        pairs = [(x, y) for x in av for y in bv]
    if not pairs or (not points and min(min(p) for p in pairs) <= 0):
        return None
    each = [x - y if points else x / y for x, y in pairs]
    if paired:
        return _median(each), min(each), max(each), len(pairs)
    ma, mb = _median(av), _median(bv)
    return (ma - mb if points else ma / mb), min(each), max(each), min(len(av), len(bv))


def _say(est, lo, hi, n, words, lower_better, points, neutral, show_range=True) -> str:
    """The verdict on a comparison (``compare``'s tuple: a verdict only where all of [lo, hi] lies
    on one side) and what it rests on: a ratio as the better one's factor (>= 1), a difference as
    a - b in percentage points; then [lo, hi] the same way (``show_range``)."""
    if points:
        good_lo, good_hi = (-hi, -lo) if lower_better else (lo, hi)
        word = words[0] if good_lo > 0 else words[1] if good_hi < 0 else neutral
        shown, lean = f"{100 * est:+.1f} pp", ""
        rng = f"{100 * lo:+.1f} to {100 * hi:+.1f}"
    else:
        g, g_lo, g_hi = (1 / est, 1 / hi, 1 / lo) if lower_better else (est, lo, hi)
        word = words[0] if g_lo > 1 else words[1] if g_hi < 1 else neutral
        if g >= 1:
            lean = words[0] if g > 1 else ""  # equal: no direction
            shown, rng = f"{g:.2f}x", f"{g_lo:.2f}x-{g_hi:.2f}x"
        else:
            shown, lean, rng = f"{1 / g:.2f}x", words[1], f"{1 / g_hi:.2f}x-{1 / g_lo:.2f}x"
    if n is not None and n < 2:
        return f"{UNRESOLVED}: {shown} {lean} (one run)".replace("  ", " ")
    if word == neutral and lean:
        shown = f"{shown} {lean}"
    return f"{word}: {shown}" + (f" ({rng})" if show_range and lo != hi else "")


def verdict_repeats(
    a, b, words=FASTER, *, lower_better: bool = False, paired: bool = False, points: bool = False
) -> str:
    """``a`` against ``b``, each a list of repeated measurements: ``words[0]`` where every ratio
    their repeats give (see ``compare``) says a is the better, ``words[1]`` where every one says b
    is, else ``WITHIN``; then the estimate and its range (``faster: 5.50x (3.64x-7.77x)``,
    ``within noise: 1.01x faster (0.62x-1.61x)``). ``lower_better``: times, FVU (a time ratio is
    shown as the speed-up); ``points``: fractions, compared by their difference. Fewer than two
    repeats of either: ``UNRESOLVED``; a missing value: "not measured"."""
    c = compare(a, b, paired=paired, points=points)
    return NM if c is None else _say(*c, words, lower_better, points, WITHIN)


def verdict_one_run(a, b, words=FASTER, *, lower_better: bool = False, points: bool = False) -> str:
    """``a`` against ``b``, one measurement each (no spread recorded): ``words[0]`` where a is the
    better by more than ``ONE_RUN_FACTOR`` (``points``: fractions, by more than
    ``ONE_RUN_POINTS``), ``words[1]`` where b is, else ``UNRESOLVED``."""
    c = compare(a, b, points=points)
    if c is None:
        return NM
    est = c[0]
    if points:
        lo, hi = est - ONE_RUN_POINTS, est + ONE_RUN_POINTS
    else:
        lo, hi = est / ONE_RUN_FACTOR, est * ONE_RUN_FACTOR
    # the margin is the criterion's (stated with it), not a measured range: not shown
    return _say(est, lo, hi, None, words, lower_better, points, UNRESOLVED, show_range=False)


def parse_target(text) -> tuple[bool, float] | None:
    """A target as a JSON records it: ">= 0.95" -> (True, 0.95), at least; "<= 0.05" -> (False,
    0.05), at most; None for anything else."""
    m = re.fullmatch(r"\s*([<>]=)\s*([\d.]+)\s*", text if isinstance(text, str) else "")
    return (m.group(1) == ">=", float(m.group(2))) if m else None


def verdict_target(x, target, *, at_least: bool = True, fmt=lambda v: f"{v:.2f}") -> str:
    """A measurement against a target (``at_least``: >= target, else <= target): "met" where every
    repeat of ``x`` (a number or a list) meets it, "missed" where none does, else ``UNRESOLVED``;
    with two repeats or more, their range follows (``fmt``)."""
    xs = values(x)
    if not xs or not isnum(target):
        return NM
    ok = [v >= target if at_least else v <= target for v in xs]
    word = "met" if all(ok) else "missed" if not any(ok) else UNRESOLVED
    lo, hi = fmt(min(xs)), fmt(max(xs))
    return f"{word} ({lo}-{hi})" if lo != hi else word


def criterion_repeats(noun: str, *, paired: bool = False) -> str:
    """The criterion of ``verdict_repeats``, said of its repeats (``noun``: "timed step", "seed")."""
    if paired:
        return (
            f"a verdict only where the same one is ahead in every {noun} (both measured in each); "
            f"else {WITHIN} (shown: the median of the per-{noun} ratios, or differences, and "
            "their range)"
        )
    return (
        f"a verdict only where every {noun} of one is ahead of every {noun} of the other; else "
        f"{WITHIN} (shown: the ratio, or difference, of the medians, and its range over every "
        f"pair of {noun}s)"
    )


def criterion_one_run(points: bool | None = False) -> str:
    """The criterion of ``verdict_one_run`` (``points``: fractions; None: both kinds)."""
    margin = (
        f"{ONE_RUN_FACTOR:g}x"
        if points is False
        else f"{100 * ONE_RUN_POINTS:g} percentage points"
        if points
        else f"{ONE_RUN_FACTOR:g}x (fractions: by more than {100 * ONE_RUN_POINTS:g} "
        "percentage points)"
    )
    return (
        f"one run each, no spread recorded: a verdict only where the two differ by more than "
        f"{margin}; else {UNRESOLVED}"
    )


def criterion_target(noun: str | None = None) -> str:
    """The criterion of ``verdict_target`` (``noun``: its repeats; None: one measurement)."""
    if noun is None:
        return (
            "met where the measurement meets the target, else missed (one measurement each, no "
            "spread recorded)"
        )
    return f"met where every {noun} meets the target, missed where none does, else {UNRESOLVED}"
