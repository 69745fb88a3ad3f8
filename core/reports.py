"""Manager reports over the inspection history, as pandas DataFrames.

Every report is counted by the database from the rollups the history writer keeps (counts per
tool and 15 minutes, score bins per tool and hour, parts per station and 15 minutes): whole
buckets come from the rollup, the partial buckets at either end of the requested range from the
events themselves (a few minutes of rows, found by the time index). So a report is exact to the
second and takes milliseconds on a year of history, where a GROUP BY over millions of events
takes seconds on SQLite.

What is counted: *parts*, i.e. events caused by a trigger or a verdict change. Heartbeats
(a continuous-mode verdict that held for ``heartbeat_s``) repeat a verdict without a new part and
are left out unless the filter asks for them (``EventFilter.causes``).

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

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from core.errors import InspectorError
from core.history import (
    EVERYTHING,
    PART_CAUSES,
    QUARTER_S,
    SCORE_BINS,
    EventFilter,
    HistoryStore,
    event_counts,
    events,
    part_counts,
    score_counts,
)

DEFAULT_SHIFTS = ("06:00", "14:00", "22:00")
PERIODS = ("hour", "shift", "day")
EXPORT_FORMATS = ("csv", "parquet")
HOUR_S = 3600
_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
EXPORT_SCHEMA = pa.schema([
    ("id", pa.int64()), ("time", pa.timestamp("us", tz="UTC")), ("station", pa.string()),
    ("camera", pa.string()), ("tool", pa.string()), ("version", pa.string()),
    ("verdict", pa.string()), ("defect_class", pa.string()), ("raw_score", pa.float64()),
    ("score", pa.float64()), ("threshold", pa.float64()), ("latency_ms", pa.float64()),
    ("cause", pa.string()), ("trigger_id", pa.string()), ("has_image", pa.bool_()),
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
        raise InspectorError(f"shift starts {list(starts)} must be at least one time, in increasing "
                             "order, e.g. 06:00,14:00,22:00")
    return minutes


def _local_periods(quarters: pd.Series, by: str, shifts: Sequence[str],
                   zone: tzinfo) -> pd.DataFrame:
    """Each 15-minute bucket's local period start (and shift name when ``by`` is 'shift')."""
    starts = parse_shifts(shifts)  # checked whatever the period: a typo should not wait
    local = (pd.to_datetime(quarters.to_numpy(dtype="int64") * QUARTER_S, unit="s", utc=True)
             .tz_convert(zone).tz_localize(None))
    if by == "hour":
        return pd.DataFrame({"period": local.floor("h")})
    if by == "day":
        return pd.DataFrame({"period": local.normalize()})
    names = [f"{_clock(s)}-{_clock(e)}" for s, e in zip(starts, starts[1:] + starts[:1])]
    minute = (local.hour * 60 + local.minute).to_numpy()
    index = np.searchsorted(starts, minute, side="right") - 1  # -1: the previous day's last shift
    day = local.normalize() - pd.to_timedelta((index < 0).astype(int), unit="D")
    return pd.DataFrame({"period": day + pd.to_timedelta(np.asarray(starts)[index], unit="m"),
                         "shift": np.asarray(names)[index]})


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


# ------------------------------------------------------------------ rollup + edges

def _parts_only(where: EventFilter) -> EventFilter:
    return where if where.causes else replace(where, causes=PART_CAUSES)


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
        frames = [pd.DataFrame(r.fetchall(), columns=list(r.keys())) for r in results]
    frame = pd.concat(frames, ignore_index=True)
    counts = [c for c in frame.columns if c in ("n", "parts", "failed")]
    keys = [c for c in frame.columns if c not in counts]
    frame[counts] = frame[counts].fillna(0).astype("int64")
    return frame.groupby(keys, as_index=False, dropna=False)[counts].sum() if keys else frame


def _bucket_range(column: sa.Column, first: int | None, end: int | None) -> list:
    return ([column >= first] if first is not None else []) + ([column < end] if end is not None else [])


def _counts(store: HistoryStore, where: EventFilter, *keys: str) -> pd.DataFrame:
    """Event counts ``n`` per ``keys`` (columns of ``event_counts``), parts only by default."""
    where = _parts_only(where)
    raw = {"defect_class": sa.func.coalesce(events.c.defect_class, "")}

    def from_rollup(first: int | None, end: int | None) -> sa.Select:
        cols = [event_counts.c[k] for k in keys]
        return (sa.select(*cols, sa.func.sum(event_counts.c.n).label("n"))
                .where(*_bucket_range(event_counts.c.quarter, first, end),
                       *where.clauses(event_counts)).group_by(*cols))

    def from_events(conditions: list) -> sa.Select:
        cols = [raw.get(k, events.c[k]).label(k) for k in keys] if keys else []
        return (sa.select(*cols, sa.func.count().label("n"))
                .where(*conditions, *where.clauses(events)).group_by(*cols))

    return _tally(store, where, QUARTER_S, from_rollup, from_events)


# ------------------------------------------------------------------ reports

def yield_over_time(store: HistoryStore, where: EventFilter = EVERYTHING, by: str = "hour",
                    shifts: Sequence[str] = DEFAULT_SHIFTS, zone: tzinfo | None = None) -> pd.DataFrame:
    """Parts, PASS, FAIL and yield (PASS / parts) per tool per local hour, shift or day.

    Columns: period (local start), [shift], tool, parts, passed, failed, yield.
    """
    if by not in PERIODS:
        raise InspectorError(f"unknown period '{by}': use one of {', '.join(PERIODS)}")
    counts = _counts(store, where, "tool", "quarter", "verdict")
    periods = _local_periods(counts["quarter"], by, shifts, zone or local_zone())
    counts = pd.concat([periods, counts.reset_index(drop=True)], axis=1)
    counts["passed"] = counts["n"].where(counts["verdict"] == "PASS", 0)
    counts["failed"] = counts["n"].where(counts["verdict"] == "FAIL", 0)
    keys = [*periods.columns, "tool"]
    out = (counts.groupby(keys, as_index=False)[["n", "passed", "failed"]].sum()
           .rename(columns={"n": "parts"}).sort_values(["period", "tool"], ignore_index=True))
    out["yield"] = out["passed"] / out["parts"]
    return out


def defect_pareto(store: HistoryStore, where: EventFilter = EVERYTHING) -> pd.DataFrame:
    """FAIL parts per tool and defect class, most frequent first, with share and cumulative share.

    Columns: tool, defect_class ('(none)' when the tool gave none), fails, share, cumulative.
    """
    where = replace(where, verdicts=("FAIL",))
    counts = _counts(store, where, "tool", "defect_class").rename(columns={"n": "fails"})
    counts["defect_class"] = counts["defect_class"].replace("", "(none)")
    counts = counts.sort_values(["fails", "tool", "defect_class"], ascending=[False, True, True],
                                ignore_index=True)
    total = counts["fails"].sum()
    counts["share"] = counts["fails"] / total if total else 0.0
    counts["cumulative"] = counts["share"].cumsum()
    return counts


def score_distribution(store: HistoryStore, where: EventFilter = EVERYTHING) -> pd.DataFrame:
    """Histogram of the smoothed defect score per tool and verdict, in SCORE_BINS bins over 0..1.

    Columns: tool, verdict, bin_low, bin_high, count (empty bins are left out).
    """
    where = _parts_only(where)

    def from_rollup(first: int | None, end: int | None) -> sa.Select:
        keys = [score_counts.c.tool, score_counts.c.verdict, score_counts.c.score_bin]
        return (sa.select(*keys, sa.func.sum(score_counts.c.n).label("n"))
                .where(*_bucket_range(score_counts.c.hour, first, end), *where.clauses(score_counts))
                .group_by(*keys))

    def from_events(conditions: list) -> sa.Select:
        keys = [events.c.tool, events.c.verdict, events.c.score_bin]
        return (sa.select(*keys, sa.func.count().label("n"))
                .where(*conditions, *where.clauses(events)).group_by(*keys))

    counts = _tally(store, where, HOUR_S, from_rollup, from_events)
    counts = counts.sort_values(["tool", "verdict", "score_bin"], ignore_index=True)
    return pd.DataFrame({"tool": counts["tool"], "verdict": counts["verdict"],
                         "bin_low": counts["score_bin"] / SCORE_BINS,
                         "bin_high": (counts["score_bin"] + 1) / SCORE_BINS, "count": counts["n"]})


def first_pass_yield(store: HistoryStore, where: EventFilter = EVERYTHING) -> pd.DataFrame:
    """First-pass yield per station: the share of parts on which every tool passed.

    A *part* is one judged frame of one camera: the trigger or verdict-change events a station
    recorded for that camera at the same frame time (a trigger judges all of the camera's tools on
    one frame). It passed first time if none of those events is FAIL. A part re-inspected after
    rework is a new part, so reworked parts lower the figure once, on their failed inspection.
    Heartbeats are not parts; the tool and verdict filters do not apply (a part spans tools).

    Columns: station, parts, passed, fpy.
    """
    where = EventFilter(since=where.since, until=where.until, stations=where.stations,
                        causes=PART_CAUSES)

    def from_rollup(first: int | None, end: int | None) -> sa.Select:
        return (sa.select(part_counts.c.station, sa.func.sum(part_counts.c.parts).label("parts"),
                          sa.func.sum(part_counts.c.failed).label("failed"))
                .where(*_bucket_range(part_counts.c.quarter, first, end), *where.clauses(part_counts))
                .group_by(part_counts.c.station))

    def from_events(conditions: list) -> sa.Select:
        failed = sa.func.max(sa.case((events.c.verdict == "FAIL", 1), else_=0)).label("failed")
        frames = (sa.select(events.c.station, failed).where(*conditions, *where.clauses(events))
                  .group_by(events.c.station, events.c.camera, events.c.time).subquery())
        return (sa.select(frames.c.station, sa.func.count().label("parts"),
                          sa.func.sum(frames.c.failed).label("failed")).group_by(frames.c.station))

    counts = _tally(store, where, QUARTER_S, from_rollup, from_events)
    counts = counts[counts["parts"] > 0].sort_values("station", ignore_index=True)
    counts["passed"] = counts["parts"] - counts["failed"]
    counts["fpy"] = counts["passed"] / counts["parts"]
    return counts[["station", "parts", "passed", "fpy"]]


REPORTS: dict[str, Callable[..., pd.DataFrame]] = {
    "yield": yield_over_time, "pareto": defect_pareto, "scores": score_distribution,
    "fpy": first_pass_yield,
}


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
