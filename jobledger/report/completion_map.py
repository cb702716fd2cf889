"""The completion map: param sets (rows) × replicates and aggregation targets (columns), one cell per output.

Built from two passes over the manifest's (job_id, template_id, param_key) index, keyed by those
integers (a million-output job's rows carry no 64-character param_id): the first (grouped) gives the
shape, the second streams every output's state, template by template and param set by param set, and
counts the states and each param set's verified outputs. A job whose
map would exceed ``MAX_CELLS`` cells is binned: consecutive param sets share a row (and, past
``MAX_REPLICATE_COLUMNS`` replicates, consecutive replicates share a column); a binned cell lists its
outputs per state and is coloured by the worst state among them.
"""
from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass, field

MAX_CELLS = 50_000
MAX_REPLICATE_COLUMNS = 100

# The states the report knows, in legend order; any other state is shown as it is, after these.
KNOWN_STATES = ("verified", "missing", "errored", "incomplete", "unchecked", "stale")
# Which state colours a binned cell: the most alarming one present (unknown states rank next to verified).
_SEVERITY = {"errored": 0, "stale": 1, "incomplete": 2, "missing": 3, "unchecked": 4, "verified": 9}
_UNKNOWN_SEVERITY = 8

# Per (template, param set): how many outputs, the first of them, and the param set itself. Grouped in the
# order of the manifest's (job_id, template_id, param_key) index, which holds output_id too, so no output's
# row is read; the verified counts come from the pass over the outputs that the map makes anyway.
_SHAPE_SQL = """
SELECT p.param_key, p.param_id, p.params_json, g.template_id, g.n, g.first
FROM (SELECT template_id, param_key, count(*) AS n, min(output_id) AS first
      FROM manifest WHERE job_id = ? GROUP BY template_id, param_key) g
JOIN params p ON p.param_key = g.param_key
"""
# A template's kind, from any of its outputs (one template never serves both kinds: see validation_plan).
_TEMPLATE_SQL = """
SELECT entrypoint, (SELECT kind FROM manifest WHERE job_id = ? AND template_id = ? LIMIT 1)
FROM task_templates WHERE template_id = ?
"""
# Both passes go template by template, param set by param set, in registration order within each: the
# order of the manifest's (job_id, template_id, param_key) index, which the state pass reads alone.
_DETAIL_SQL = """
SELECT param_key, template_id, state, path, run_seed, task_id, detail
FROM outputs WHERE job_id = ? ORDER BY template_id, param_key, output_id
"""
_STATE_SQL = ("SELECT param_key, template_id, state FROM outputs WHERE job_id = ? "
              "ORDER BY template_id, param_key, output_id")


@dataclass
class MapColumn:
    label: str
    title: str
    kind: str            # 'replicate' or 'aggregation'


@dataclass
class MapCell:
    state: str
    title: str | None = None     # one output: path, seed, task id, detail
    outputs: int = 1             # a binned cell: how many outputs it stands for
    counts: str | None = None    # a binned cell holding several states: "missing:1 verified:3"


@dataclass
class MapRow:
    label: str
    title: str                   # param_id, values and counts ('' for a binned row: the page composes it)
    values: list[str]            # shown per parameter (a range when binned)
    sort_keys: list[str]         # per parameter: the value (the mean of a numeric range when binned)
    completion: float            # verified / expected of the row
    cells: list[MapCell | None]


@dataclass
class CompletionMap:
    columns: list[MapColumn]
    rows: list[MapRow]
    parameters: list[str]
    rows_per_bin: int = 1
    replicates_per_column: int = 1
    param_sets: int = 0
    state_counts: dict[str, int] = field(default_factory=dict)
    # param_id -> [verified, expected], for the parameter view
    per_param_set: dict[str, list[int]] = field(default_factory=dict)
    param_values: dict[str, dict] = field(default_factory=dict)

    @property
    def binned(self) -> bool:
        return self.rows_per_bin > 1 or self.replicates_per_column > 1

    @property
    def cell_count(self) -> int:
        return sum(1 for row in self.rows for cell in row.cells if cell is not None)

    def states(self) -> list[str]:
        """Legend order: the known states, then any other state the ledger holds."""
        return [*KNOWN_STATES, *sorted(s for s in self.state_counts if s not in KNOWN_STATES)]


def severity(state: str) -> int:
    return _SEVERITY.get(state, _UNKNOWN_SEVERITY)


def build_map(conn: sqlite3.Connection, job_id: str) -> CompletionMap:
    """The map of ``job_id``, with each param set's parameters and verified/expected counts."""
    # Plain tuples: a sqlite3.Row per output costs a tenth of the pass over a million outputs.
    cursor = conn.cursor()
    cursor.row_factory = None
    param_values: dict[str, dict] = {}
    first_seen: dict[str, int] = {}
    replicates: dict[str, int] = {}
    target_width: dict[str, int] = {}
    done: dict[str, list[int]] = {}
    per_target: dict[tuple[str, str], int] = {}
    param_of: dict[int, str] = {}          # param_key -> param_id
    template_of: dict[int, tuple[str, str]] = {}  # template_id -> (entrypoint, kind)
    for key, param_id, values, template, n, first in cursor.execute(_SHAPE_SQL, (job_id,)):
        if key not in param_of:
            param_values[param_id] = json.loads(values)
            param_of[key] = param_id
            done[param_id] = [0, 0]
        if template not in template_of:
            template_of[template] = cursor.connection.execute(_TEMPLATE_SQL,
                                                              (job_id, template, template)).fetchone()
        entrypoint, kind = template_of[template]
        first_seen[param_id] = min(first, first_seen.get(param_id, first))
        done[param_id][1] += n
        if kind == "aggregation":  # (a target may come with more than one template: per bundle)
            per_target[(param_id, entrypoint)] = per_target.get((param_id, entrypoint), 0) + n
        else:
            replicates[param_id] = replicates.get(param_id, 0) + n
    for (_, entrypoint), n in per_target.items():
        target_width[entrypoint] = max(n, target_width.get(entrypoint, 0))
    order = sorted(first_seen, key=first_seen.__getitem__)
    max_reps = max(replicates.values(), default=0)
    per_column = math.ceil(max_reps / MAX_REPLICATE_COLUMNS) if max_reps > MAX_REPLICATE_COLUMNS else 1
    rep_columns = math.ceil(max_reps / per_column) if max_reps else 0
    targets = sorted(target_width)
    target_offset, width = {}, rep_columns
    for target in targets:
        target_offset[target] = width
        width += target_width[target]
    per_row = max(1, math.ceil(len(order) * width / MAX_CELLS)) if width else 1
    cmap = CompletionMap(_columns(rep_columns, per_column, max_reps, targets, target_width), [],
                         _parameter_names(param_values, order), per_row, per_column, len(order),
                         {}, done, param_values)

    # Cells are numbered row * width + column. Per param set (by param_key): its row's first cell,
    # its next replicate.
    row_of = {pid: i // per_row for i, pid in enumerate(order)}
    slots = {key: [row_of[pid] * width, 0] for key, pid in param_of.items()}
    aggregates: dict[tuple[int, str], int] = {}

    def cell_of(key: int, template: int) -> int:
        slot = slots[key]
        entrypoint, kind = template_of[template]
        if kind == "aggregation":
            k = aggregates.get((key, entrypoint), 0)
            aggregates[(key, entrypoint)] = k + 1
            return slot[0] + target_offset[entrypoint] + k
        slot[1] += 1
        return slot[0] + (slot[1] - 1) // per_column

    cells: dict[int, MapCell] = {}
    counts = cmap.state_counts
    verified = dict.fromkeys(param_of, 0)  # per param_key
    if not cmap.binned:
        for row in cursor.execute(_DETAIL_SQL, (job_id,)):
            cells[cell_of(row[0], row[1])] = MapCell(row[2], _cell_title(row))
            counts[row[2]] = counts.get(row[2], 0) + 1
            if row[2] == "verified":
                verified[row[0]] += 1
    else:
        # One counter array per state keeps the loop over a million outputs to two lookups each.
        n_cells = math.ceil(len(order) / per_row) * width
        per_state: dict[str, list[int]] = {}
        aggregating = {t for t, (_, kind) in template_of.items() if kind == "aggregation"}
        for key, template, state in cursor.execute(_STATE_SQL, (job_id,)):
            counter = per_state.get(state)
            if counter is None:
                counter = per_state[state] = [0] * n_cells
            if state == "verified":
                verified[key] += 1
            if template in aggregating:
                counter[cell_of(key, template)] += 1
            else:  # cell_of inlined: this line runs once per output
                slot = slots[key]
                counter[slot[0] + slot[1] // per_column] += 1
                slot[1] += 1
        counts.update((state, sum(counter)) for state, counter in per_state.items())
        for cell in range(n_cells):
            bucket = {state: counter[cell] for state, counter in per_state.items() if counter[cell]}
            if bucket:
                cells[cell] = _binned_cell(bucket)
    for key, n in verified.items():
        done[param_of[key]][0] = n
    cmap.rows = _rows(cmap, order, cells, width)
    return cmap


def _columns(rep_columns: int, per_column: int, max_reps: int, targets: list[str],
             target_width: dict[str, int]) -> list[MapColumn]:
    columns = []
    for c in range(rep_columns):
        first, last = c * per_column, min(max_reps, (c + 1) * per_column) - 1
        label = f"{first}" if first == last else f"{first}–{last}"
        columns.append(MapColumn(label, f"replicate {label}", "replicate"))
    for target in targets:
        for k in range(target_width[target]):
            columns.append(MapColumn(target + (f" #{k + 1}" if target_width[target] > 1 else ""),
                                     f"aggregation by target {target}", "aggregation"))
    return columns


def _cell_title(row) -> str:
    _, _, state, path, seed, task_id, detail = row
    return f"{path}\nseed {seed}\ntask {task_id}\n{state}" + (f": {detail}" if detail else "")


def _rows(cmap: CompletionMap, order: list[str], cells: dict[int, MapCell], width: int) -> list[MapRow]:
    per_row = cmap.rows_per_bin
    rows = []
    for start in range(0, len(order), per_row):
        members = order[start:start + per_row]
        r = start // per_row
        row_cells: list[MapCell | None] = [cells.get(r * width + c) for c in range(width)]
        verified = sum(cmap.per_param_set[p][0] for p in members)
        expected = sum(cmap.per_param_set[p][1] for p in members)
        completion = verified / expected if expected else 0.0
        if per_row == 1:
            pid = members[0]
            values = cmap.param_values.get(pid, {})
            shown = [display_value(values[name]) if name in values else "" for name in cmap.parameters]
            keys = [sort_key(values[name]) if name in values else "" for name in cmap.parameters]
            title = f"{pid}\n{json.dumps(values, sort_keys=True)}\n{verified}/{expected} verified"
            rows.append(MapRow(pid[:12], title, shown, keys, completion, row_cells))
        else:
            shown, keys = _ranges(cmap, members)
            label = f"#{start + 1}–{start + len(members)}"
            rows.append(MapRow(label, "", shown, keys, completion, row_cells))
    return rows


def _binned_cell(bucket: dict[str, int]) -> MapCell:
    worst = min(bucket, key=severity)
    if len(bucket) == 1:
        return MapCell(worst, None, bucket[worst])
    counts = " ".join(f"{s}:{bucket[s]}" for s in sorted(bucket, key=lambda s: (severity(s), s)))
    return MapCell(worst, None, sum(bucket.values()), counts)


def _ranges(cmap: CompletionMap, members: list[str]) -> tuple[list[str], list[str]]:
    shown, keys = [], []
    for name in cmap.parameters:
        values = [cmap.param_values.get(p, {}).get(name) for p in members]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if numbers and len(numbers) == len(values):
            low, high = min(numbers), max(numbers)
            shown.append(display_value(low) if low == high else f"{display_value(low)}–{display_value(high)}")
            keys.append(f"{sum(numbers) / len(numbers):.7g}")
        else:
            distinct = sorted({display_value(v) for v in values})
            shown.append(distinct[0] if len(distinct) == 1 else f"{len(distinct)} values")
            keys.append(distinct[0] if distinct else "")
    return shown, keys


def _parameter_names(param_values: dict[str, dict], order: list[str]) -> list[str]:
    names: dict[str, None] = {}
    for pid in order:
        for name in param_values.get(pid, {}):
            names.setdefault(name, None)
    return list(names)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def sort_key(value) -> str:
    """What the page sorts a row by: a number as its full repr, anything else as its shown text."""
    return repr(value) if is_number(value) else display_value(value)


def display_value(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:.6g}"
    return json.dumps(value, sort_keys=True)
