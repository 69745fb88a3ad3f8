"""The inspection history: every verdict event and every tool change, in a database.

One SQLAlchemy URL names the store (``StationSettings.database_url``): by default a SQLite file in
the workspace, or a PostgreSQL server that several stations of a plant write to at once (each
event carries its station's name). ``open_history`` opens it once per URL and process, upgrading
its schema with the Alembic migrations in ``core/migrations`` first, so a new version of the app
never loses the history of the old one.

Writing never slows the line: ``HistoryStore.recorder(station)`` is a ``VerdictSink`` whose
``remember`` only puts the events on a queue; a writer thread inserts them in batches, one
transaction per batch. A station starts and inspects while its database is away
(``open_history(while_away=True)``): the writer keeps the events in a bounded spool file in the
workspace, flushed to disk batch by batch so that a kill loses none, and writes them, oldest
first, when the database is back. A row the database refuses is set aside in a quarantine file
with the reason; the rows behind it are written.

SQLite runs in WAL mode with ``synchronous=FULL``: the WAL is flushed to disk at every commit,
so a committed batch survives a power cut, and WAL's atomic commits mean a crash mid-write (power
cut, ``kill -9``) never corrupts the file: the half-written batch is simply absent. ``NORMAL``
would also never corrupt it but could lose the last commits on a power cut; since commits are
batched, FULL's one fsync per batch costs little. A busy timeout lets several processes (the
Streamlit server, the headless station, the CLI) share the file.

Besides the events, the writer keeps three small rollups in the same transaction (counts per
tool and 15 minutes, smoothed-score bins per tool and UTC day, parts per station and 15 minutes):
``core.records.reports`` reads those, so a report over a year of history takes milliseconds. What a
*part* is (``PART_RULE``) is defined here once, for the writer, the reports and the migrations.
An event of a reading tool (a code or label text) also keeps what it read, in its ``reading_*``
columns (text, format, confidence, grade; NULL for the other kinds).

FAIL images (``keep_fail_images``) are stored as JPEG blobs in ``fail_images``, keyed by their
event's id, not as files: the event and its image commit in one transaction (a crash never
leaves an image without its event or a reference to a missing file), a plant's PostgreSQL server
shows every station's images to a manager on any PC, and the history is one thing to back up.
Keeping them in their own table keeps event scans off the image pages; ``apply_retention``
deletes images older than ``fail_image_days`` (SQLite reuses the freed pages).
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import queue
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from core.errors import InspectorError
from core.records.verdicts import (CHANGE, ERROR, FAIL, HEARTBEAT, PASS, TRIGGER, Reading, VerdictRecord,
                                   short_error)
from core.store import tools
from core.store.settings import StationSettings, load_settings
from core.store.tools import ToolChange
from core.store.workspace import fsync_dir, workspace_root

LOG = logging.getLogger("shopfloor_inspector.history")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# revisions are numbered in order ("0001_...py", "0002_...py"): the highest is the head
HEAD_REVISION = max(p.name[:4] for p in (MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))
QUARTER_S = 900  # the rollups' time bucket: 15 minutes fit every time zone and shift boundary
SCORE_BINS = 20  # smoothed-score histogram bins of width 0.05
_MIGRATION_LOCK = 7_384_210_311  # PostgreSQL advisory lock id: one station migrates at a time
SPOOL_FOLDER = "history-spool"  # in the workspace: events kept while the database is away
UNREACHABLE = (sa.exc.OperationalError, sa.exc.InterfaceError, OSError)  # away, not refusing

# ------------------------------------------------------------------ schema (head revision)

metadata = sa.MetaData()
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _col(name: str, kind: Any, nullable: bool = False, **kw: Any) -> sa.Column:
    return sa.Column(name, kind, nullable=nullable, **kw)


events = sa.Table(
    "verdict_events", metadata,
    _col("id", _ID, primary_key=True, autoincrement=True),
    _col("time", sa.Double()), _col("station", sa.String()), _col("camera", sa.String()),
    _col("tool", sa.String()), _col("version", sa.String()), _col("verdict", sa.String()),
    _col("defect_class", sa.String(), True), _col("raw_score", sa.Double(), True),
    _col("score", sa.Double(), True), _col("threshold", sa.Double()),
    _col("latency_ms", sa.Double(), True), _col("cause", sa.String()),
    _col("trigger_id", sa.String(), True),
    _col("quarter", sa.Integer(), True), _col("score_bin", sa.Integer(), True),
    _col("error", sa.Text(), True),
    _col("reading_text", sa.Text(), True), _col("reading_format", sa.String(), True),
    _col("reading_confidence", sa.Double(), True), _col("reading_grade", sa.String(), True),
)
changes = sa.Table(
    "tool_changes", metadata,
    _col("id", _ID, primary_key=True, autoincrement=True), _col("time", sa.Double()),
    _col("station", sa.String()), _col("tool", sa.String()), _col("action", sa.String()),
    _col("details", sa.Text()), _col("actor", sa.String()),
)
fail_images = sa.Table(
    "fail_images", metadata,
    _col("event_id", _ID, primary_key=True), _col("time", sa.Double()),
    _col("jpeg", sa.LargeBinary()),
)
event_counts = sa.Table(
    "event_counts", metadata,
    *[_col(k, sa.String(), primary_key=True) for k in ("station", "tool")],
    _col("quarter", sa.Integer(), primary_key=True),
    *[_col(k, sa.String(), primary_key=True) for k in ("cause", "verdict", "defect_class")],
    _col("n", sa.BigInteger()),
)
score_counts = sa.Table(
    "score_counts", metadata,
    *[_col(k, sa.String(), primary_key=True) for k in ("station", "tool")],
    _col("day", sa.Integer(), primary_key=True),  # UTC day: quarter // 96
    *[_col(k, sa.String(), primary_key=True) for k in ("cause", "verdict")],
    _col("score_bin", sa.Integer(), primary_key=True), _col("n", sa.BigInteger()),
)
part_counts = sa.Table(  # parts_of_events per station and quarter
    "part_counts", metadata,
    _col("station", sa.String(), primary_key=True), _col("quarter", sa.Integer(), primary_key=True),
    _col("parts", sa.BigInteger()), _col("failed", sa.BigInteger()), _col("triggered", sa.BigInteger()),
)


# ------------------------------------------------------------------ what a part is

PART_VERDICTS = {TRIGGER: (PASS, FAIL, ERROR), CHANGE: (FAIL,)}  # cause -> verdicts that are a part
PART_RULE = {  # PART_VERDICTS in words, per cause (shown as it is on the History page)
    TRIGGER: "one part, PASS, FAIL or ERROR: a trigger judges one part (an ERROR part is not a "
             "good one)",
    CHANGE: "a change to FAIL is one defective part coming into view; a change back to PASS "
            "ends it and is no new part (the good parts that follow are not counted one by one); "
            "a change to ERROR is the tool failing, no part",
    HEARTBEAT: "no part: the verdict only held",
}
# the causes whose good parts are counted one by one: a yield is the PASS share of their parts
YIELD_CAUSES = tuple(cause for cause, verdicts in PART_VERDICTS.items() if PASS in verdicts)


def counts_as_part(cause: str, verdict: str) -> bool:
    """``PART_RULE`` for one event (the writer's rollups)."""
    return verdict in PART_VERDICTS.get(cause, ())


def is_part(table: sa.TableClause) -> sa.ColumnElement[bool]:
    """``PART_RULE`` in SQL, for the events and the rollups (every table with cause and verdict)."""
    return sa.or_(*[sa.and_(table.c.cause == cause, table.c.verdict.in_(verdicts))
                    for cause, verdicts in PART_VERDICTS.items()])


def parts_of_events(table: sa.TableClause, conditions: Iterable[sa.ColumnElement[bool]] = (),
                    per_quarter: bool = False) -> sa.Select:
    """SQL: parts, failed and triggered per station (and quarter hour: what ``part_counts`` holds)
    counted from the events of ``table`` that match ``conditions``.

    A part here spans a camera's tools: the part events (``is_part``) of one camera at one frame
    time (a trigger judges all of the camera's tools on one frame); it failed if one of them is
    not PASS (FAIL or ERROR) and was triggered if one is of ``YIELD_CAUSES``. The writer counts
    its batches alike.
    """
    failed = sa.func.max(sa.case((table.c.verdict != PASS, 1), else_=0)).label("failed")
    triggered = sa.func.max(sa.case((table.c.cause.in_(YIELD_CAUSES), 1), else_=0)).label("triggered")
    frames = (sa.select(table.c.station, table.c.quarter, failed, triggered)
              .where(is_part(table), *conditions)
              .group_by(table.c.station, table.c.quarter, table.c.camera, table.c.time).subquery())
    keys = [frames.c.station, frames.c.quarter] if per_quarter else [frames.c.station]
    return (sa.select(*keys, sa.func.count().label("parts"), sa.func.sum(frames.c.failed).label("failed"),
                      sa.func.sum(frames.c.triggered).label("triggered"))
            .group_by(*keys))


def score_bin(score: float | None) -> int | None:
    """The histogram bin (0..SCORE_BINS-1) of a smoothed score in 0..1 (None: no score)."""
    if score is None or not math.isfinite(score):
        return None
    return min(max(int(score * SCORE_BINS), 0), SCORE_BINS - 1)


# ------------------------------------------------------------------ filters

@dataclass(frozen=True)
class EventFilter:
    """Which events a query or report covers; an empty tuple means no restriction."""

    since: float | None = None  # epoch seconds, inclusive
    until: float | None = None  # epoch seconds, exclusive
    tools: tuple[str, ...] = ()
    stations: tuple[str, ...] = ()
    verdicts: tuple[str, ...] = ()
    causes: tuple[str, ...] = ()

    def clauses(self, table: sa.Table) -> list[sa.ColumnElement[bool]]:
        """The non-time conditions that apply to ``table`` (a rollup lacks some columns)."""
        wanted = {"tool": self.tools, "station": self.stations, "verdict": self.verdicts,
                  "cause": self.causes}
        return [table.c[name].in_(values) for name, values in wanted.items()
                if values and name in table.c]

    def time_clauses(self, table: sa.Table) -> list[sa.ColumnElement[bool]]:
        found = []
        if self.since is not None:
            found.append(table.c.time >= self.since)
        if self.until is not None:
            found.append(table.c.time < self.until)
        return found


EVERYTHING = EventFilter()


# ------------------------------------------------------------------ the store

class HistoryStore:
    """One history database (use ``open_history``: one store per URL and process)."""

    WRITE_CHUNK = 5_000  # rows per executemany

    def __init__(self, url: str, settings: StationSettings, spool_dir: Path | None = None):
        self.url = url
        self.settings = settings  # the latest settings given to open_history (images, retention)
        self.spool_dir = spool_dir  # where recorders keep events while the database is away
        self.engine = _engine(url)
        self._recorders: dict[str, HistoryRecorder] = {}
        self._change_removers: dict[str, Callable[[], None]] = {}
        self._lock = threading.RLock()
        self._migrated = False

    def ready(self) -> None:
        """Upgrade the schema once (before the first write); raises while the database is away."""
        with self._lock:
            if not self._migrated:
                self._migrate()
                self._migrated = True

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def _migrate(self) -> None:
        with self.engine.connect().execution_options(sqlite_immediate=True) as conn, conn.begin():
            if self.dialect == "postgresql":
                conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})"))
            if _revision_of(conn) == HEAD_REVISION:
                return  # up to date: no need to load Alembic (reports from a shell stay quick)
            from alembic import command
            from alembic.config import Config

            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    @property
    def location(self) -> str:
        """The database URL without its password, to show."""
        return _safe(self.url)

    def revision(self) -> str | None:
        """The schema's Alembic revision (``head`` after ``open_history``)."""
        with self.engine.connect() as conn:
            return _revision_of(conn)

    # -------------------------------------------------------------- writing

    def recorder(self, station: str) -> HistoryRecorder:
        """The station's queued writer (one per station and store; the same one on every call)."""
        with self._lock:
            found = self._recorders.get(station)
            if found is None:
                found = self._recorders[station] = HistoryRecorder(self, station)
            return found

    def listen_to_tool_changes(self, station: str) -> Callable[[], None]:
        """Record every tool change of this process from now on (once, however often called);
        returns the function that stops it. Changes go through the station's recorder, so a
        database outage delays them instead of refusing the engineer's change."""
        with self._lock:  # re-entrant: recorder() takes it too
            remover = self._change_removers.get(station)
            if remover is None:
                stop_listening = tools.add_change_listener(self.recorder(station).remember_change)

                def remover() -> None:
                    stop_listening()
                    with self._lock:
                        self._change_removers.pop(station, None)

                self._change_removers[station] = remover
            return remover

    def record_change(self, change: ToolChange, station: str) -> None:
        """Write one tool change now (synchronous)."""
        self.write(station, [], [change])

    def write(self, station: str, records: Iterable[VerdictRecord],
              tool_changes: Iterable[ToolChange] = ()) -> None:
        """Write events and changes in one transaction, with their rollups and FAIL images."""
        self.ready()
        rows, images = [], []
        keep_images = self.settings.keep_fail_images
        for record in records:
            row = _event_row(record, station)
            wanted = keep_images and record.verdict == FAIL
            jpeg = _jpeg(record.roi_image(), self.settings.fail_image_max_kb) if wanted else None
            if jpeg is None:
                rows.append(row)
            else:
                images.append((row, jpeg))
        change_rows = [{"time": c.time, "station": station, "tool": c.tool, "action": c.action,
                        "details": json.dumps(c.details, default=str), "actor": c.actor}
                       for c in tool_changes]
        with self.engine.connect().execution_options(sqlite_immediate=True) as conn, conn.begin():
            for start in range(0, len(rows), self.WRITE_CHUNK):
                conn.execute(events.insert(), rows[start:start + self.WRITE_CHUNK])
            for row, jpeg in images:
                event_id = conn.execute(events.insert().values(row)).inserted_primary_key[0]
                conn.execute(fail_images.insert().values(event_id=event_id, time=row["time"],
                                                         jpeg=jpeg))
            if change_rows:
                conn.execute(changes.insert(), change_rows)
            self._add_to_rollups(conn, rows + [row for row, _ in images])

    def _add_to_rollups(self, conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        counts = Counter((r["station"], r["tool"], r["quarter"], r["cause"], r["verdict"],
                          r["defect_class"] or "") for r in rows)
        scores = Counter((r["station"], r["tool"], r["quarter"] // 96, r["cause"], r["verdict"],
                          r["score_bin"]) for r in rows if r["score_bin"] is not None)
        frames: dict[tuple, list[bool]] = {}  # parts_of_events in Python: frame -> failed, triggered
        for r in rows:
            if counts_as_part(r["cause"], r["verdict"]):
                frame = frames.setdefault((r["station"], r["quarter"], r["camera"], r["time"]),
                                          [False, False])
                frame[0] |= r["verdict"] != PASS
                frame[1] |= r["cause"] in YIELD_CAUSES
        parts: dict[tuple, list[int]] = {}
        for (station, quarter, _, _), (failed, triggered) in frames.items():
            tally = parts.setdefault((station, quarter), [0, 0, 0])
            tally[0] += 1
            tally[1] += failed
            tally[2] += triggered
        for table, tally in ((event_counts, counts), (score_counts, scores)):
            names = [c.name for c in table.columns]
            self._upsert(conn, table, [dict(zip(names, (*key, n))) for key, n in tally.items()])
        self._upsert(conn, part_counts, [{"station": s, "quarter": q, "parts": p, "failed": f,
                                          "triggered": t} for (s, q), (p, f, t) in parts.items()])

    def _upsert(self, conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        """Add the rows' counts to the rollup (insert the keys it does not have yet)."""
        if not rows:
            return
        keys = [c.name for c in table.primary_key.columns]
        counts = [c.name for c in table.columns if c.name not in keys]
        if self.dialect in ("sqlite", "postgresql"):
            insert = (sqlite if self.dialect == "sqlite" else postgresql).insert(table)
            conn.execute(insert.on_conflict_do_update(
                index_elements=keys, set_={c: table.c[c] + insert.excluded[c] for c in counts}), rows)
            return
        for row in rows:  # other databases: update, else insert (one station writes its own keys)
            match = sa.and_(*[table.c[k] == row[k] for k in keys])
            done = conn.execute(table.update().where(match).values(
                {c: table.c[c] + row[c] for c in counts})).rowcount
            if not done:
                conn.execute(table.insert().values(row))

    def apply_retention(self, now: float | None = None) -> int:
        """Delete FAIL images older than ``fail_image_days`` (their events stay); returns how many."""
        cutoff = (time.time() if now is None else now) - self.settings.fail_image_days * 86400
        with self.engine.connect().execution_options(sqlite_immediate=True) as conn, conn.begin():
            return conn.execute(fail_images.delete().where(fail_images.c.time < cutoff)).rowcount

    # -------------------------------------------------------------- reading

    def events_query(self, where: EventFilter, newest_first: bool = True,
                     limit: int | None = None) -> sa.Select:
        """The SELECT of filtered events (with ``has_image``), for ``events`` and exports."""
        has_image = sa.exists().where(fail_images.c.event_id == events.c.id).label("has_image")
        columns = [c for c in events.c if c.name not in ("quarter", "score_bin")]
        query = (sa.select(*columns, has_image)
                 .where(*where.time_clauses(events), *where.clauses(events))
                 .order_by(events.c.time.desc() if newest_first else events.c.time, events.c.id))
        return query.limit(limit) if limit else query

    def events(self, where: EventFilter = EVERYTHING, limit: int | None = 1000,
               newest_first: bool = True) -> pd.DataFrame:
        """Filtered events (newest first), ``time`` as UTC timestamps."""
        with self.engine.connect() as conn:
            result = conn.execute(self.events_query(where, newest_first, limit))
            return event_frame(result.fetchall(), list(result.keys()))

    def iter_events(self, where: EventFilter = EVERYTHING,
                    chunk_rows: int = 50_000) -> Iterator[pd.DataFrame]:
        """Every filtered event, oldest first, in DataFrames of at most ``chunk_rows`` rows."""
        with self.engine.connect() as conn:
            result = conn.execution_options(yield_per=chunk_rows).execute(
                self.events_query(where, newest_first=False))
            names = list(result.keys())
            for chunk in result.partitions():
                yield event_frame(chunk, names)

    def last_event(self, tool: str) -> dict[str, Any] | None:
        """A tool's latest event on any station (survives restarts, unlike the live buffer)."""
        latest = self.events(EventFilter(tools=(tool,)), limit=1)
        return None if latest.empty else latest.iloc[0].to_dict()

    def changes(self, where: EventFilter = EVERYTHING, limit: int | None = 1000) -> pd.DataFrame:
        """Filtered tool changes, newest first, ``details`` parsed from JSON."""
        query = (sa.select(changes).where(*where.time_clauses(changes), *where.clauses(changes))
                 .order_by(changes.c.time.desc(), changes.c.id.desc()))
        with self.engine.connect() as conn:
            frame = pd.DataFrame(conn.execute(query.limit(limit) if limit else query).mappings().all(),
                                 columns=[c.name for c in changes.c])
        frame["time"] = utc_times(frame["time"])
        frame["details"] = [json.loads(d) for d in frame["details"]]
        return frame

    def fail_image(self, event_id: int) -> bytes | None:
        """The JPEG of a FAIL event's ROI, if it was kept (and not yet deleted by retention)."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(fail_images.c.jpeg)
                                .where(fail_images.c.event_id == event_id)).scalar()

    def names(self) -> dict[str, list[str]]:
        """The stations and tools that have events (for filter pickers), read from the rollup."""
        with self.engine.connect() as conn:
            return {kind: list(conn.execute(sa.select(event_counts.c[kind]).distinct()
                                            .order_by(event_counts.c[kind])).scalars())
                    for kind in ("station", "tool")}

    def close(self, timeout: float = 10.0) -> bool:
        """Drain and stop the recorders, stop listening, forget this store; True if all drained."""
        with self._lock:
            recorders, removers = list(self._recorders.values()), list(self._change_removers.values())
        for remove in removers:
            remove()
        drained = all([r.close(timeout) for r in recorders])
        with _STORES_LOCK:
            if _STORES.get(self.url) is self:
                del _STORES[self.url]
        self.engine.dispose()
        return drained


def utc_times(seconds: pd.Series) -> pd.Series:
    """Epoch seconds as UTC timestamps to the microsecond (what CSV and Parquet keep)."""
    return pd.to_datetime((seconds.astype("float64") * 1e6).round().astype("int64"), unit="us",
                          utc=True)


def frame_of(rows: Iterable[Any], names: list[str]) -> pd.DataFrame:
    """Result rows as a DataFrame, column by column (much faster than pandas reading Row objects)."""
    columns = list(zip(*rows)) or [()] * len(names)
    return pd.DataFrame(dict(zip(names, columns)), columns=names)


def event_frame(rows: Iterable[Any], names: list[str]) -> pd.DataFrame:
    frame = frame_of(rows, names)
    frame["time"] = utc_times(frame["time"])
    if "has_image" in frame:
        frame["has_image"] = frame["has_image"].astype(bool)
    return frame


def _event_row(record: VerdictRecord, station: str) -> dict[str, Any]:
    return {"time": record.time, "station": station, "camera": record.camera, "tool": record.tool,
            "version": record.version, "verdict": record.verdict,
            "defect_class": record.defect_class, "raw_score": record.raw_score,
            "score": record.score, "threshold": record.threshold, "latency_ms": record.latency_ms,
            "cause": record.cause, "trigger_id": record.trigger_id,
            "quarter": int(record.time // QUARTER_S), "score_bin": score_bin(record.score),
            "error": record.error, **_reading_columns(record.reading)}


def _reading_columns(reading: Reading | None) -> dict[str, Any]:
    """What a reading tool read, as the event's ``reading_*`` columns (all None without one).
    A NUL character (a Code 128 can hold one) is stored as its picture '␀': PostgreSQL text
    cannot hold it, and the event would be refused."""
    if reading is None:
        return dict.fromkeys(("reading_text", "reading_format", "reading_confidence", "reading_grade"))
    return {"reading_text": reading.text.replace("\x00", "\u2400"), "reading_format": reading.format,
            "reading_confidence": reading.confidence, "reading_grade": reading.grade}


def _jpeg(image: np.ndarray | None, max_kb: int) -> bytes | None:
    """The image as a JPEG of at most ``max_kb`` KB: lower quality first, then smaller."""
    import cv2  # only where FAIL images are kept: reading the history needs no OpenCV

    if image is None or image.size == 0:
        return None
    for _ in range(8):
        for quality in (90, 75, 60, 45):
            ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if ok and len(encoded) <= max_kb * 1024:
                return encoded.tobytes()
        image = cv2.resize(image, None, fx=0.7, fy=0.7, interpolation=cv2.INTER_AREA)
    return None  # tiny limits: better no image than a useless one


def _engine(url: str) -> sa.Engine:
    try:
        parsed = sa.make_url(url)
        if parsed.get_backend_name() != "sqlite":
            return sa.create_engine(parsed, pool_pre_ping=True)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
        raise InspectorError(f"history database URL '{url}' is not valid ({exc}): give a "
                             "SQLAlchemy URL such as sqlite:////path/history.sqlite or "
                             "postgresql+psycopg://user:password@host/db") from exc
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(parsed, connect_args={"timeout": 30, "check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's BEGIN below, not the driver's
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=30000",
                       "foreign_keys=ON"):
            dbapi_connection.execute(f"PRAGMA {pragma}")

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:  # writers take the lock up front: no upgrade deadlock
        immediate = conn.get_execution_options().get("sqlite_immediate")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


# ------------------------------------------------------------------ the queued writer

_CLOSE = object()


class Spool:
    """One station's events waiting on disk while its history database is away: JSON lines,
    appended and flushed to disk batch by batch (a kill loses none of them), replayed oldest
    first in one transaction when the database is back, then removed. Bounded by ``MAX_BYTES``:
    past it, events wait in memory instead. FAIL images are not kept here (events only)."""

    MAX_BYTES = 256 * 2**20

    def __init__(self, path: Path):
        self.path = path

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def add(self, items: list[Any]) -> bool:
        """Keep the items on disk; False when the spool is full or cannot be written."""
        data = "".join(json.dumps(_to_json(item), default=str) + "\n" for item in items).encode()
        if self.size() + len(data) > self.MAX_BYTES:
            return False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            LOG.warning("cannot keep history events in %s: %s", self.path, exc)
            return False
        return True

    def items(self) -> list[Any]:
        """What the spool holds, oldest first (a line torn by a kill mid-write is left out)."""
        found = []
        for line in self.path.read_bytes().splitlines() if self.size() else ():
            try:
                found.append(_from_json(json.loads(line)))
            except (ValueError, TypeError, KeyError):
                LOG.warning("skipping a damaged line of %s", self.path)
        return found

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
        fsync_dir(self.path.parent)


def _to_json(item: Any) -> dict[str, Any]:
    if isinstance(item, ToolChange):
        return {"change": asdict(item)}
    return {"events": [{k: v for k, v in asdict(replace(r, frame=None)).items() if k != "frame"}
                       for r in item]}


def _from_json(data: dict[str, Any]) -> Any:
    if "change" in data:
        return ToolChange(**data["change"])
    return [VerdictRecord(**{**r, "box": tuple(r["box"]) if r.get("box") else None,
                             "reading": Reading(**r["reading"]) if r.get("reading") else None})
            for r in data["events"]]


class HistoryRecorder:
    """A ``VerdictSink`` that never blocks: events go on a queue, a thread writes them in batches.

    ``remember`` costs a few microseconds (a lock and a queue put). No event is ever dropped:
    while the database is unreachable the writer keeps the batches on disk (``Spool``) and
    writes them, oldest first, when it is back (past the spool's bound, in memory, retrying);
    a row the database refuses (a value it cannot take) is set aside with its reason in a
    quarantine file, never blocking the rows behind it. ``problem`` says what is wrong (for the
    pages); ``flush`` waits until everything queued so far is committed or kept on disk;
    ``close`` drains the queue and stops the thread.
    """

    BATCH_ITEMS = 500  # queue items (one per remember call) per transaction
    RETENTION_EVERY_S = 3600.0
    RETRY_S = (0.5, 30.0)  # pause between two attempts at an unreachable database: first, longest

    def __init__(self, store: HistoryStore, station: str):
        self.store, self.station = store, station
        self.error: str | None = None  # the last write failure, None once writes succeed again
        self.quarantined = 0  # rows the database refused, set aside in ``quarantine``
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", station)
        folder = store.spool_dir
        self.spool = Spool(folder / f"{name}.jsonl") if folder else None
        self.quarantine = folder / f"{name}.quarantine.jsonl" if folder else None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._written = threading.Condition()
        self._queued = self._done = 0
        self._closed = False
        self._pause = self.RETRY_S[0]
        self._thread = threading.Thread(target=self._run, name=f"history-writer-{station}",
                                        daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Queue items not yet committed or kept on disk."""
        return self._queued - self._done

    @property
    def problem(self) -> str | None:
        """What the operator should know about this station's history writing, or None."""
        found = [self.error] if self.error else []
        if self.quarantined:
            found.append(f"{self.quarantined} history event(s) refused by the database were set "
                         f"aside with the reason in {self.quarantine}")
        return "; ".join(found) or None

    def remember(self, records: list[VerdictRecord]) -> None:
        if not records:
            return
        if not self.store.settings.keep_fail_images:  # do not hold frames nobody will store
            records = [replace(r, frame=None) if r.frame is not None else r for r in records]
        self._put(list(records))

    def remember_change(self, change: ToolChange) -> None:
        self._put(change)

    def _put(self, item: Any) -> None:
        with self._lock:
            if self._closed:
                raise InspectorError(f"the history recorder of station {self.station} is closed")
            self._queued += 1
            self._queue.put(item)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued before this call is committed (or kept on disk while
        the database is away); False on timeout."""
        with self._lock:
            target = self._queued
        with self._written:
            return self._written.wait_for(lambda: self._done >= target, timeout)

    def close(self, timeout: float = 10.0) -> bool:
        """Write what is queued, then stop; False if the queue could not be drained in time."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(_CLOSE)
        self._thread.join(timeout)
        with self.store._lock:
            if self.store._recorders.get(self.station) is self:
                del self.store._recorders[self.station]
        return not self._thread.is_alive()

    def _run(self) -> None:
        next_retention = 0.0
        while True:
            waiting = self.spool is not None and self.spool.size() > 0
            try:  # events on disk: come back to them after a pause even if nothing new arrives
                items = [self._queue.get(timeout=self._pause if waiting else None)]
            except queue.Empty:
                items = []
            while items and len(items) < self.BATCH_ITEMS and items[-1] is not _CLOSE:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            work = [item for item in items if item is not _CLOSE]
            self._write(work)
            with self._written:
                self._done += len(work)
                self._written.notify_all()
            if items and items[-1] is _CLOSE:
                return
            if time.monotonic() >= next_retention and not self.error:
                next_retention = time.monotonic() + self.RETENTION_EVERY_S
                self._apply_retention()

    def _write(self, items: list[Any]) -> None:
        """Commit the spool's events then these; while the database is away keep these on disk
        (or, past the spool's bound, retry with them in memory)."""
        while True:
            try:
                if self.spool is not None and self.spool.size():
                    self._commit(self.spool.items())
                    self.spool.clear()
                if items:
                    self._commit(items)
                self.error, self._pause = None, self.RETRY_S[0]
                return
            except UNREACHABLE as exc:
                kept = not items or (self.spool is not None and self.spool.add(items))
                waiting = self.spool.size() if self.spool is not None else 0
                self.error = (f"history database unreachable ({_reason(exc)}): "
                              + (f"{waiting:,} bytes of events wait on disk in {self.spool.path}"
                                 if kept and self.spool is not None else
                                 f"{self.pending} batch(es) wait in memory"))
                LOG.warning("history write failed (next attempt in %.1f s): %s", self._pause,
                            _reason(exc))
                pause, self._pause = self._pause, min(self._pause * 2, self.RETRY_S[1])
                if kept:
                    return
                time.sleep(pause)

    def _commit(self, items: list[Any]) -> None:
        """Write items in one transaction; the rows the database refuses (not for being away)
        are found by halving the batch and set aside, and the others are written."""
        if not items:
            return
        records = [r for item in items if isinstance(item, list) for r in item]
        tool_changes = [item for item in items if isinstance(item, ToolChange)]
        try:
            self.store.write(self.station, records, tool_changes)
        except UNREACHABLE:
            raise
        except Exception as exc:  # noqa: BLE001 - a refused row must not block the rows behind it
            if len(items) > 1:
                half = len(items) // 2
                self._commit(items[:half])
                self._commit(items[half:])
            elif isinstance(items[0], list) and len(items[0]) > 1:
                self._commit([[record] for record in items[0]])
            else:
                self._set_aside(items[0], exc)

    def _set_aside(self, item: Any, exc: Exception) -> None:
        self.quarantined += 1
        LOG.error("the history database refused an event, set aside: %s", _reason(exc))
        if self.quarantine is None:
            return
        line = {"reason": _reason(exc), "at": time.time(), **_to_json(item)}
        try:
            self.quarantine.parent.mkdir(parents=True, exist_ok=True)
            with open(self.quarantine, "a", encoding="utf-8") as f:
                f.write(json.dumps(line, default=str) + "\n")
        except OSError as write_error:
            LOG.error("cannot write the quarantine file %s: %s", self.quarantine, write_error)

    def _apply_retention(self) -> None:
        try:
            self.store.apply_retention()
        except Exception:  # noqa: BLE001 - retention runs again in an hour
            LOG.exception("FAIL image retention failed")


# ------------------------------------------------------------------ one store per URL

_STORES: dict[str, HistoryStore] = {}
_STORES_LOCK = threading.Lock()


def open_history(settings: StationSettings | None = None, root: Path | None = None,
                 while_away: bool = False) -> HistoryStore:
    """The station's history store, created and migrated on first use, then shared by every
    thread of the process (the Streamlit server and the webcam threads). Cheap to call again:
    it returns the same store, updated with the latest settings.

    A database that cannot be reached is one clear line, unless ``while_away`` (a station that
    must inspect all the same): then its recorders keep the events on disk until it is back."""
    settings = settings or load_settings(root)
    url = settings.database_url(root)
    with _STORES_LOCK:
        store = _STORES.get(url)
        if store is None:
            store = HistoryStore(url, settings, (root or workspace_root()) / SPOOL_FOLDER)
            try:
                store.ready()
            except UNREACHABLE as exc:
                message = (f"cannot open the history database {_safe(url)}: {_reason(exc)}; check "
                           "the URL and that the server is running")
                if not while_away:
                    raise InspectorError(message) from exc
                LOG.warning("%s (events wait on disk until it is back)", message)
            _STORES[url] = store
        store.settings = settings
        return store


def _revision_of(conn: sa.Connection) -> str | None:
    """The schema's Alembic revision, None for a new database."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def _safe(url: str) -> str:
    return sa.make_url(url).render_as_string(hide_password=True)


def _reason(exc: BaseException) -> str:
    """A database error in one line, without the SQL (which may hold a whole batch)."""
    return short_error(getattr(exc, "orig", None) or exc)


@atexit.register
def _close_all() -> None:
    """Write what is still queued when the process ends normally."""
    for store in list(_STORES.values()):
        store.close(timeout=10.0)

