"""Chart geometry for the report: numbers only; the templates turn them into inline SVG (autoescaped).

Parameter view: for each parameter, the share of verified outputs across its values — one bar
per value when there are few, equal-width bins for many numeric values, the most common values
and "other" for many texts. Timeline and sparklines: verified outputs per validation run.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field

from .completion_map import CompletionMap, display_value, is_number

MAX_BARS = 24
NUMERIC_BINS = 20
BAR_WIDTH, BAR_GAP, CHART_HEIGHT, CHART_LEFT = 16, 4, 90, 40
TIMELINE_LEFT = 60


@dataclass
class Bar:
    x: float
    y: float
    height: float
    label: str
    title: str
    band: str       # 'all' (every output verified), 'some', 'none': colours the bar


@dataclass
class BarChart:
    name: str
    bars: list[Bar]
    width: float
    height: float = CHART_HEIGHT
    note: str = ""


@dataclass
class LineChart:
    points: str                       # SVG polyline points
    dots: list[tuple[float, float, str]] = field(default_factory=list)   # x, y, title
    width: float = 600
    height: float = 120
    y_max: int = 0
    x_labels: tuple[str, str] = ("", "")


def parameter_view(cmap: CompletionMap) -> tuple[list[BarChart], dict[str, str]]:
    """A bar chart per parameter that varies, and the value of each parameter that does not."""
    groups: dict[str, dict[object, list[int]]] = {name: {} for name in cmap.parameters}
    for pid, (verified, expected) in cmap.per_param_set.items():
        values = cmap.param_values.get(pid, {})
        for name, by_value in groups.items():
            value = values.get(name, _ABSENT)
            if type(value) not in _HASHABLE:
                value = display_value(value)   # lists and objects are grouped by their JSON text
            tally = by_value.get(value)
            if tally is None:
                by_value[value] = [verified, expected, 1]
            else:
                tally[0] += verified
                tally[1] += expected
                tally[2] += 1
    charts, constants = [], {}
    for name, by_value in groups.items():
        if len(by_value) == 1 and len(cmap.per_param_set) > 1:
            constants[name] = _label(next(iter(by_value)))
        else:
            charts.append(_bar_chart(name, by_value))
    return charts, constants


class _Absent:
    def __repr__(self) -> str:
        return "(not set)"


_ABSENT = _Absent()
_HASHABLE = (int, float, str, bool, type(None), _Absent)


def _bar_chart(name: str, groups: dict[object, list[int]]) -> BarChart:
    values = list(groups)
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    note = ""
    if len(values) <= MAX_BARS:
        keyed = sorted(values, key=lambda v: (not is_number(v), v if is_number(v) else str(v)))
        labelled = [(_label(v), groups[v]) for v in keyed]
    elif len(numbers) == len(values):
        low, high = min(numbers), max(numbers)
        step = (high - low) / NUMERIC_BINS
        bins = [[0, 0, 0] for _ in range(NUMERIC_BINS)]
        for v in numbers:
            i = min(NUMERIC_BINS - 1, int((v - low) / step)) if step else 0
            for k in range(3):
                bins[i][k] += groups[v][k]
        labelled = [(f"{low + i * step:.3g}–{low + (i + 1) * step:.3g}", bins[i])
                    for i in range(NUMERIC_BINS) if bins[i][2]]
        note = f"{len(values):,} distinct values in {NUMERIC_BINS} equal-width bins"
    else:
        common = sorted(values, key=lambda v: -groups[v][1])[:MAX_BARS - 1]
        other = [0, 0, 0]
        for value in set(values).difference(common):
            for k in range(3):
                other[k] += groups[value][k]
        labelled = [(_label(v), groups[v]) for v in common] + [("other", other)]
        note = f"{len(values):,} distinct values: the {MAX_BARS - 1} most common, then the rest"
    bars = []
    for i, (label, (verified, expected, sets)) in enumerate(labelled):
        share = verified / expected if expected else 0.0
        height = round(share * (CHART_HEIGHT - 10), 1)
        band = "all" if expected and verified == expected else ("some" if verified else "none")
        title = (f"{name} = {label}: {verified:,}/{expected:,} outputs verified ({100 * share:.1f} %) "
                 f"in {sets:,} param set{'s' if sets != 1 else ''}")
        x = CHART_LEFT + i * (BAR_WIDTH + BAR_GAP)
        bars.append(Bar(x, CHART_HEIGHT - height, height, label, title, band))
    width = max(200, CHART_LEFT + len(bars) * (BAR_WIDTH + BAR_GAP) + 10)
    return BarChart(name, bars, width, CHART_HEIGHT, note)


def _label(value) -> str:
    return repr(value) if isinstance(value, _Absent) else display_value(value)


def timeline(runs: list[dict], width: float = 600, height: float = 120) -> LineChart | None:
    """Verified outputs per validation run against the run's start time (by order when times coincide)."""
    if not runs:
        return None
    times = [seconds_of(r["started_at"]) for r in runs]
    known = [t for t in times if t is not None]
    start = min(known, default=0.0)
    span = max(known) - start if known and len(known) == len(times) else 0.0
    y_max = max(max(r["expected"] or 0, r["verified"] or 0) for r in runs) or 1
    left, right, top, bottom = TIMELINE_LEFT, 10, 10, 20
    dots = []
    for i, (run, t) in enumerate(zip(runs, times, strict=True)):
        if span and t is not None:
            frac = (t - start) / span
        else:
            frac = i / (len(runs) - 1) if len(runs) > 1 else 0.5
        x = left + frac * (width - left - right)
        y = top + (1 - (run["verified"] or 0) / y_max) * (height - top - bottom)
        title = (f"run {run['run_id']} at {run['started_at']}: "
                 f"{run['verified']:,}/{run['expected']:,} verified "
                 f"({run['strategy'] or '?'}, {run['outcome'] or 'no outcome'})")
        dots.append((round(x, 1), round(y, 1), title))
    points = " ".join(f"{x},{y}" for x, y, _ in dots)
    first, last = runs[0]["started_at"] or "", runs[-1]["started_at"] or ""
    return LineChart(points, dots, width, height, y_max, (first, last))


def sparkline(verified: list[int], expected: int, width: float = 100, height: float = 20) -> str:
    """Polyline points of verified counts over validation runs (empty when never validated)."""
    if not verified:
        return ""
    top = max(expected, max(verified)) or 1
    step = width / (len(verified) - 1) if len(verified) > 1 else 0
    xs = [round(i * step if step else width / 2, 1) for i in range(len(verified))]
    ys = [round(height - 1 - v / top * (height - 2), 1) for v in verified]
    return " ".join(f"{x},{y}" for x, y in zip(xs, ys, strict=True))


def seconds_of(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return _dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
