"""Manager reports over the inspection history, as pandas DataFrames.

Every report is counted by the database from the rollups the history writer keeps (counts per
tool and 15 minutes, score bins per tool and UTC day, parts per station and 15 minutes): whole
buckets come from the rollup, the partial buckets at either end of the requested range from the
events themselves (a few minutes of rows, found by the time index). So a report is exact to the
second and takes milliseconds on a year of history, where a GROUP BY over millions of events
takes seconds on SQLite.

What is counted: *parts*, as ``core.records.history.PART_RULE`` says for each cause of event (``is_part``
is the same rule in SQL, the one the writer's rollups follow): a trigger judges one part, PASS or
FAIL; in continuous mode a change to FAIL is one defective part coming into view, while a change
back to PASS only ends it and a heartbeat only repeats a verdict. Continuous mode never counts the
good parts one by one, so the *yield* and the *first-pass yield* are PASS shares of the triggered
parts; FAIL parts of both modes count as FAIL and in the Pareto. A filter that names causes
(``EventFilter.causes``) counts every event of those causes instead.

Periods are in the station's local time (``local_zone``, daylight saving included): an hour, a
day, or a shift. Shifts start at ``DEFAULT_SHIFTS`` (06:00, 14:00, 22:00) unless given; a shift
belongs to the day it starts on (the 22:00-06:00 shift of Monday ends on Tuesday).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from core.errors import InspectorError
from core.records.history import (
    EVERYTHING,
    QUARTER_S,
    SCORE_BINS,
    YIELD_CAUSES,
    EventFilter,
    HistoryStore,
    changes,
    event_counts,
    events,
    frame_of,
    is_part,
    part_counts,
    parts_of_events,
    score_counts,
)
from core.records.report_options import DEFAULT_SHIFTS, EXPORT_FORMATS, PERIODS, REPORT_NAMES
from core.records.verdicts import CORRECTED, FAIL, PASS

DAY_S = 86400
_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
EXPORT_SCHEMA = pa.schema([
    ("id", pa.int64()), ("time", pa.timestamp("us", tz="UTC")), ("station", pa.string()),
    ("camera", pa.string()), ("tool", pa.string()), ("version", pa.string()),
    ("verdict", pa.string()), ("defect_class", pa.string()), ("raw_score", pa.float64()),
    ("score", pa.float64()), ("threshold", pa.float64()), ("latency_ms", pa.float64()),
    ("cause", pa.string()), ("trigger_id", pa.string()), ("error", pa.string()),
    ("reading_text", pa.string()), ("reading_format", pa.string()),
    ("reading_confidence", pa.float64()), ("reading_grade", pa.string()),
    ("has_image", pa.bool_()),
])


# ------------------------------------------------------------------ time

def local_zone() -> tzinfo:
    """The station's time zone with its daylight-saving rules ($TZ, else the system's)."""
    name = os.environ.get("TZ", "").lstrip(":")
    try:
        if name:
            return ZoneInfo(name)
        with open("/etc/localtime", "rb") as file:
            return ZoneInfo.from_file(file, key="localtime")
    except (OSError, ValueError):
        return datetime.now().astimezone().tzinfo  # fixed offset: no better on this system


def day_range(first: date, last: date, zone: tzinfo | None = None) -> tuple[float, float]:
    """Epoch seconds from local midnight of ``first`` to local midnight after ``last``."""
    zone = zone or local_zone()
    start = datetime.combine(first, datetime.min.time(), tzinfo=zone)
    end = datetime.combine(last + timedelta(days=1), datetime.min.time(), tzinfo=zone)
    return start.timestamp(), end.timestamp()


def parse_shifts(starts: Sequence[str]) -> list[int]:
    """Shift start times ("HH:MM", on a quarter hour, increasing) as minutes after midnight."""
    minutes = []
    for text in starts:
        match = _CLOCK.match(text.strip())
        if not match:
            raise InspectorError(f"shift start '{text}' is not a time: write HH:MM, e.g. 06:00")
        value = int(match[1]) * 60 + int(match[2])
        if value % 15:
            raise InspectorError(f"shift start '{text}' is not on a quarter hour (:00 :15 :30 :45)")
        minutes.append(value)
    if not minutes or minutes != sorted(set(minutes)):
        raise InspectorError(f"shift starts '{','.join(starts)}' must be at least one time, in increasing "
                             "order, e.g. 06:00,14:00,22:00")
    return minutes


def _offsets(store: HistoryStore, where: EventFilter, zone: tzinfo) -> list[tuple[int, int]]:
    """The zone's UTC offset over the range, in quarter hours: [(first quarter, offset), ...],
    one entry per stretch of constant offset (a year has three: winter, summer, winter)."""
    since, until = where.since, where.until
    if since is None or until is None:
        with store.engine.connect() as conn:  # one query each: SQLite then reads the index ends
            first = conn.execute(sa.select(sa.func.min(events.c.time))).scalar()
            last = conn.execute(sa.select(sa.func.max(events.c.time))).scalar()
        since = since if since is not None else (first if first is not None else 0.0)
        until = until if until is not None else (last + 1 if last is not None else since + 1)

    def offset(quarter: int) -> int:
        when = datetime.fromtimestamp(quarter * QUARTER_S, zone)
        return int(when.utcoffset().total_seconds()) // QUARTER_S

    quarter, last = int(since // QUARTER_S), int(until // QUARTER_S) + 1
    stretches = [(quarter, offset(quarter))]
    while quarter < last:  # look every hour; pin a change down to its quarter hour
        step = min(4, last - quarter)
        if offset(quarter + step) != stretches[-1][1]:
            while offset(quarter + 1) == stretches[-1][1]:
                quarter += 1
            stretches.append((quarter + 1, offset(quarter + 1)))
            quarter += 1
        else:
            quarter += step
    return stretches


def _period_start(quarter: sa.ColumnElement, by: str, shifts: list[int],
                  offsets: list[tuple[int, int]]) -> sa.ColumnElement:
    """SQL: the local quarter hour (quarters since 1970-01-01 00:00 local) starting the period.

    Constants are written into the SQL (they are our integers), so the expression in SELECT and
    in GROUP BY is the same text: PostgreSQL refuses bound parameters there.
    """
    def n(value: int) -> sa.ColumnElement:
        return sa.literal_column(str(int(value)), sa.Integer)

    offset = n(offsets[0][1]) if len(offsets) == 1 else sa.case(
        *[(quarter < n(start), n(previous)) for (_, previous), (start, _) in zip(offsets, offsets[1:])],
        else_=n(offsets[-1][1]))
    local = quarter + offset
    if by == "hour":
        return (local // n(4)) * n(4)
    day = (local // n(96)) * n(96)
    if by == "day":
        return day
    starts = [m // 15 for m in shifts]  # quarter of the day each shift starts at
    of_day = local % n(96)
    return sa.case((of_day < n(starts[0]), day + n(starts[-1] - 96)),
                   *[(of_day < n(following), day + n(start))
                     for start, following in zip(starts, starts[1:])],
                   else_=day + n(starts[-1]))


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


# ------------------------------------------------------------------ rollup + edges


def _part_clauses(where: EventFilter, table: sa.Table) -> list[sa.ColumnElement[bool]]:
    """The parts (``is_part``) unless the filter names causes: then every event of those."""
    return [] if where.causes else [is_part(table)]


def _tally(store: HistoryStore, where: EventFilter, width_s: int,
           from_rollup: Callable[[int | None, int | None], sa.Select],
           from_events: Callable[[list[sa.ColumnElement[bool]]], sa.Select]) -> pd.DataFrame:
    """Sum a rollup over the whole buckets of the range and the events over its partial ends.

    ``from_rollup(first, end)`` selects the rollup's buckets in [first, end) (None: open);
    ``from_events(conditions)`` selects the same columns from the events matching conditions.
    Both must name their columns alike; the result sums the count columns per key.
    """
    since, until = where.since, where.until
    first = None if since is None else math.ceil(since / width_s)
    end = None if until is None else math.floor(until / width_s)
    queries = []
    if first is not None and end is not None and first >= end:  # inside one bucket: events only
        queries.append(from_events(where.time_clauses(events)))
    else:
        queries.append(from_rollup(first, end))
        if since is not None and since < first * width_s:
            queries.append(from_events([events.c.time >= since, events.c.time < first * width_s]))
        if until is not None and until > end * width_s:
            queries.append(from_events([events.c.time >= end * width_s, events.c.time < until]))
    with store.engine.connect() as conn:
        results = [conn.execute(q) for q in queries]
        frames = [frame_of(r.fetchall(), list(r.keys())) for r in results]
    frame = pd.concat(frames, ignore_index=True)
    counts = [c for c in frame.columns if c in ("n", "parts", "failed", "triggered")]
    keys = [c for c in frame.columns if c not in counts]
    frame[counts] = frame[counts].fillna(0).astype("int64")
    return frame.groupby(keys, as_index=False, dropna=False)[counts].sum() if keys else frame


def _bucket_range(column: sa.Column, first: int | None, end: int | None) -> list:
    return ([column >= first] if first is not None else []) + ([column < end] if end is not None else [])


def _column(name: str) -> Callable[[sa.Table], sa.ColumnElement]:
    return lambda table: table.c[name]


def _counts(store: HistoryStore, where: EventFilter,
            keys: dict[str, Callable[[sa.Table], sa.ColumnElement]],
            with_failed: bool = False) -> pd.DataFrame:
    """Part counts ``n`` (with ``failed``: parts not passed, FAIL or ERROR, and ``triggered``:
    parts of the yield causes) per key; each key is built from a table with the columns of
    ``event_counts`` (the rollup, or the events)."""

    def select(table: sa.Table, conditions: list) -> sa.Select:
        columns = [make(table).label(name) for name, make in keys.items()]
        each = table.c.n if table is event_counts else sa.literal_column("1")
        counts = [sa.func.sum(each).label("n")]
        if with_failed:
            counts.append(sa.func.sum(sa.case((table.c.verdict != PASS, each), else_=0))
                          .label("failed"))
            counts.append(sa.func.sum(sa.case((table.c.cause.in_(YIELD_CAUSES), each), else_=0))
                          .label("triggered"))
        return (sa.select(*columns, *counts)
                .where(*conditions, *where.clauses(table), *_part_clauses(where, table))
                .group_by(*columns))

    return _tally(store, where, QUARTER_S,
                  lambda first, end: select(event_counts,
                                            _bucket_range(event_counts.c.quarter, first, end)),
                  lambda conditions: select(events, conditions))


# ------------------------------------------------------------------ reports

def yield_over_time(store: HistoryStore, where: EventFilter = EVERYTHING, by: str = "hour",
                    shifts: Sequence[str] = DEFAULT_SHIFTS, zone: tzinfo | None = None) -> pd.DataFrame:
    """Parts, PASS, FAIL and yield per tool per local hour, shift or day (``PART_RULE``).

    Columns: period (local start), [shift], tool, parts, passed, failed, triggered (the parts
    judged by a trigger), yield (passed / triggered: NaN without triggered parts).
    """
    if by not in PERIODS:
        raise InspectorError(f"unknown period '{by}': use one of {', '.join(PERIODS)}")
    zone = zone or local_zone()
    starts = parse_shifts(shifts)  # checked whatever the period: a typo should not wait
    offsets = _offsets(store, where, zone)
    counts = _counts(store, where, {
        "start": lambda t: _period_start(t.c.quarter, by, starts, offsets), "tool": _column("tool"),
    }, with_failed=True)
    out = (counts.rename(columns={"n": "parts"}).sort_values(["start", "tool"], ignore_index=True)
           .reindex(columns=["start", "tool", "parts", "failed", "triggered"]))
    out.insert(3, "passed", out["parts"] - out["failed"])
    out.insert(0, "period", pd.to_datetime(out.pop("start").astype("int64") * QUARTER_S, unit="s"))
    if by == "shift":
        names = {start: f"{_clock(start)}-{_clock(end)}"
                 for start, end in zip(starts, starts[1:] + starts[:1])}
        minutes = out["period"].dt.hour * 60 + out["period"].dt.minute
        out.insert(1, "shift", minutes.map(lambda m: names[m]))
    out["yield"] = out["passed"] / out["triggered"].where(out["triggered"] > 0)
    return out


def defect_pareto(store: HistoryStore, where: EventFilter = EVERYTHING) -> pd.DataFrame:
    """FAIL parts per tool and defect class, most frequent first, with share and cumulative share.

    Columns: tool, defect_class ('(none)' when the tool gave none), fails, share, cumulative.
    """
    where = replace(where, verdicts=(FAIL,))
    counts = _counts(store, where, {
        "tool": _column("tool"),
        "defect_class": lambda table: sa.func.coalesce(table.c.defect_class, ""),
    }).rename(columns={"n": "fails"})
    counts["defect_class"] = counts["defect_class"].replace("", "(none)")
    counts = counts.sort_values(["fails", "tool", "defect_class"], ascending=[False, True, True],
                                ignore_index=True)
    total = counts["fails"].sum()
    counts["share"] = counts["fails"] / total if total else 0.0
    counts["cumulative"] = counts["share"].cumsum()
    return counts


def score_distribution(store: HistoryStore, where: EventFilter = EVERYTHING) -> pd.DataFrame:
    """Histogram of the parts' smoothed defect score per tool and verdict, in SCORE_BINS bins.

    Columns: tool, verdict, bin_low, bin_high, count (empty bins are left out).
    """
    def from_rollup(first: int | None, end: int | None) -> sa.Select:
        keys = [score_counts.c.tool, score_counts.c.verdict, score_counts.c.score_bin]
        return (sa.select(*keys, sa.func.sum(score_counts.c.n).label("n"))
                .where(*_bucket_range(score_counts.c.day, first, end), *where.clauses(score_counts),
                       *_part_clauses(where, score_counts))
                .group_by(*keys))

    def from_events(conditions: list) -> sa.Select:
        keys = [events.c.tool, events.c.verdict, events.c.score_bin]
        return (sa.select(*keys, sa.func.count().label("n"))
                .where(*conditions, events.c.score_bin.is_not(None), *where.clauses(events),
                       *_part_clauses(where, events))
                .group_by(*keys))

    counts = _tally(store, where, DAY_S, from_rollup, from_events)
    counts = counts.sort_values(["tool", "verdict", "score_bin"], ignore_index=True)
    return pd.DataFrame({"tool": counts["tool"], "verdict": counts["verdict"],
                         "bin_low": counts["score_bin"] / SCORE_BINS,
                         "bin_high": (counts["score_bin"] + 1) / SCORE_BINS, "count": counts["n"]})


def first_pass_yield(store: HistoryStore, where: EventFilter = EVERYTHING) -> pd.DataFrame:
    """First-pass yield per station: the share of triggered parts on which every tool passed.

    A *part* here spans tools (``parts_of_events``): the events that are parts by ``PART_RULE``
    of one camera at one frame time; it passed first time if all of them are PASS. As for the
    yield, only triggered parts count their good ones, so the first-pass yield is the PASS share
    of the triggered parts; defective parts seen in continuous mode count in parts and failed. A
    part re-inspected after rework is a new part, so reworked parts lower the figure once, on
    their failed inspection. The tool, verdict and cause filters do not apply (a part spans tools).

    Columns: station, parts, passed, failed, triggered, fpy (passed / triggered: NaN without
    triggered parts).
    """
    where = EventFilter(since=where.since, until=where.until, stations=where.stations)
    counted = ("parts", "failed", "triggered")

    def from_rollup(first: int | None, end: int | None) -> sa.Select:
        return (sa.select(part_counts.c.station, *[sa.func.sum(part_counts.c[c]).label(c) for c in counted])
                .where(*_bucket_range(part_counts.c.quarter, first, end), *where.clauses(part_counts))
                .group_by(part_counts.c.station))

    def from_events(conditions: list) -> sa.Select:
        return parts_of_events(events, [*conditions, *where.clauses(events)])

    counts = _tally(store, where, QUARTER_S, from_rollup, from_events)
    counts = counts[counts["parts"] > 0].sort_values("station", ignore_index=True)
    counts["passed"] = counts["parts"] - counts["failed"]
    counts["fpy"] = counts["passed"] / counts["triggered"].where(counts["triggered"] > 0)
    return counts[["station", "parts", "passed", "failed", "triggered", "fpy"]]


def operator_corrections(store: HistoryStore, where: EventFilter = EVERYTHING) -> pd.DataFrame:
    """How often the operators disagree with each tool: the verdicts they corrected on the line
    (``core.station.line_learning.ReviewQueue.correct``, recorded as tool changes) against the parts the
    tool judged (``PART_RULE``), over the filter's time range, tools and stations.

    Columns: tool, parts, corrections, share (corrections / parts: NaN without parts); tools with
    neither are left out.
    """
    parts = _counts(store, where, {"tool": _column("tool")}).rename(columns={"n": "parts"})
    query = (sa.select(changes.c.tool, sa.func.count().label("corrections"))
             .where(changes.c.action == CORRECTED, *where.time_clauses(changes),
                    *where.clauses(changes))
             .group_by(changes.c.tool))
    with store.engine.connect() as conn:
        result = conn.execute(query)
        corrected = frame_of(result.fetchall(), list(result.keys()))
    out = parts.merge(corrected, on="tool", how="outer").fillna(0)
    out[["parts", "corrections"]] = out[["parts", "corrections"]].astype("int64")
    out["share"] = out["corrections"] / out["parts"].where(out["parts"] > 0)
    return out.sort_values("tool", ignore_index=True)[["tool", "parts", "corrections", "share"]]


REPORTS: dict[str, Callable[..., pd.DataFrame]] = dict(zip(REPORT_NAMES, (
    yield_over_time, defect_pareto, score_distribution, first_pass_yield), strict=True))


# ------------------------------------------------------------------ export

def export_events(store: HistoryStore, path: Path, fmt: str, where: EventFilter = EVERYTHING,
                  chunk_rows: int = 50_000) -> int:
    """Write every filtered event (all causes unless filtered), oldest first, to CSV or Parquet.

    Streamed in chunks of ``chunk_rows`` so a year of history never sits in memory; written to a
    temporary file renamed at the end, so an interrupted export never leaves half a file. Times
    are UTC. Returns the number of events written.
    """
    if fmt not in EXPORT_FORMATS:
        raise InspectorError(f"unknown export format '{fmt}': use csv or parquet")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    written = 0
    try:
        if fmt == "csv":
            with partial.open("w", newline="") as out:
                out.write(",".join(EXPORT_SCHEMA.names) + "\n")
                for chunk in store.iter_events(where, chunk_rows):
                    chunk.to_csv(out, header=False, index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ")
                    written += len(chunk)
        else:
            with pq.ParquetWriter(partial, EXPORT_SCHEMA) as out:
                for chunk in store.iter_events(where, chunk_rows):
                    out.write_table(pa.Table.from_pandas(chunk, schema=EXPORT_SCHEMA,
                                                         preserve_index=False))
                    written += len(chunk)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return written


def events_csv(store: HistoryStore, where: EventFilter = EVERYTHING, limit: int = 100_000) -> bytes:
    """The latest ``limit`` filtered events as CSV bytes (the page's download button)."""
    frame = store.events(where, limit=limit).iloc[::-1]
    return frame.to_csv(index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ").encode()
