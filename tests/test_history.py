"""The history store on real databases: SQLite files in temporary workspaces (a writer killed with
SIGKILL included) and a real PostgreSQL server started for the module on a loopback port."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from core.errors import InspectorError
from core.records.history import HEAD_REVISION, MIGRATIONS, EventFilter, HistoryStore, open_history
from core.records.reports import first_pass_yield, yield_over_time
from core.records.verdicts import ERROR, TRIGGER, Reading, VerdictRecord
from core.store.datasets import read_image
from core.store.settings import StationSettings
from core.store.tools import ToolChange, ToolStore, acting_as
from tests.conftest import sample_paths
from tests.readings import code_result
from tests.servers import Postgres, free_port, wait_until

APP = Path(__file__).resolve().parents[1]
HEAD = ScriptDirectory(str(MIGRATIONS)).get_current_head()  # what open_history upgrades to


def test_the_head_revision_is_known_without_alembic():
    assert HEAD_REVISION == HEAD  # the numbering convention open_history relies on to skip Alembic


def record(when: float, tool: str = "weld", verdict: str = "PASS", cause: str = "trigger",
           trigger_id: str | None = None, frame: np.ndarray | None = None) -> VerdictRecord:
    score = 0.9 if verdict == "FAIL" else 0.1
    return VerdictRecord(when, tool, verdict, "crack" if verdict == "FAIL" else None, score, 0.5,
                         "v1", cause, "0", score + 0.01, 12.5, trigger_id,
                         (10, 20, 110, 140) if frame is not None else None, frame)


@pytest.fixture
def store(workspace) -> HistoryStore:
    opened = open_history(StationSettings(name="st1"), root=workspace)
    yield opened
    opened.close()


def test_recorder_writes_events_and_they_read_back(store, workspace):
    assert open_history(StationSettings(name="st1"), root=workspace) is store  # one per URL
    assert store.recorder("st1") is store.recorder("st1")
    assert store.url.startswith("sqlite:///") and str(workspace) in store.url
    now = time.time()
    store.recorder("st1").remember([record(now, "weld", "FAIL", trigger_id="P1"),
                                    record(now, "label", "PASS", trigger_id="P1")])
    store.recorder("st2").remember([record(now + 1, "weld", "PASS", cause="change")])
    assert store.recorder("st1").flush(10) and store.recorder("st2").flush(10)

    frame = store.events()
    assert list(frame["station"]) == ["st2", "st1", "st1"]  # newest first
    fail = frame[frame["verdict"] == "FAIL"].iloc[0]
    assert (fail["tool"], fail["defect_class"], fail["trigger_id"], fail["cause"]) == (
        "weld", "crack", "P1", "trigger")
    assert fail["score"] == 0.9 and fail["raw_score"] == pytest.approx(0.91)
    assert fail["latency_ms"] == 12.5 and fail["threshold"] == 0.5 and fail["camera"] == "0"
    assert abs(fail["time"].timestamp() - now) < 1e-3
    only = store.events(EventFilter(stations=("st1",), verdicts=("PASS",)))
    assert list(only["tool"]) == ["label"]
    assert store.events(EventFilter(since=now + 0.5)).shape[0] == 1
    assert store.names() == {"station": ["st1", "st2"], "tool": ["label", "weld"]}
    with sqlite_connection(store) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_an_error_verdict_is_recorded_without_a_score_and_never_blocks_the_rows_behind(store):
    now = time.time()
    error = VerdictRecord(now, "weld", ERROR, None, None, 0.5, "v1", "trigger", "0",
                          trigger_id="P1", error="the model gave no usable score (nan)")
    store.recorder("st1").remember([error, record(now, "label", "PASS", trigger_id="P1")])
    store.recorder("st1").remember([record(now + 1, "weld", "PASS", trigger_id="P2"),
                                    record(now + 1, "label", "PASS", trigger_id="P2")])
    assert store.recorder("st1").flush(10)
    frame = store.events(newest_first=False)
    assert list(frame["verdict"]) == [ERROR, "PASS", "PASS", "PASS"]
    first = frame.iloc[0]
    assert math.isnan(first["score"]) and first["error"] == error.error
    fpy = first_pass_yield(store).set_index("station").loc["st1"]
    assert (fpy["parts"], fpy["passed"], fpy["failed"]) == (2, 1, 1)  # an ERROR part is no good part
    hourly = yield_over_time(store)
    weld = hourly[hourly["tool"] == "weld"].iloc[0]
    assert (weld["parts"], weld["passed"], weld["failed"]) == (2, 1, 1)


def readings(frame: pd.DataFrame) -> dict[str, list]:
    """The reading columns of each tool's events, None where NULL."""
    cells = frame.set_index("tool")[["reading_text", "reading_format", "reading_confidence",
                                     "reading_grade"]]
    return {tool: [None if pd.isna(v) else v for v in row] for tool, row in cells.iterrows()}


def reading_events(when: float) -> list[VerdictRecord]:
    """One part judged by a code tool (a real EAN-13 photo read by the decoder), a label text
    tool (with a confidence, a numpy float as OCR engines give it, and a grade) and a
    classifier, which reads nothing."""
    code = VerdictRecord.of(code_result(tool="serial"), when, TRIGGER, trigger_id="P1")
    text = replace(code, tool="lot", reading=Reading("LOT 2503-17", "text", np.float32(0.875), "B"))
    return [code, text, record(when, "weld", trigger_id="P1")]


READ = {"serial": ["8480010001136", "EAN-13", None, None], "lot": ["LOT 2503-17", "text", 0.875, "B"],
        "weld": [None, None, None, None]}


def test_what_a_reading_tool_read_is_recorded_with_its_event(store):
    store.recorder("st1").remember(reading_events(time.time()))
    assert store.recorder("st1").flush(10)
    assert readings(store.events()) == READ


def test_readings_wait_in_the_spool_and_the_quarantine_as_they_were_read(store, tmp_path):
    away = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/history"  # nobody listens
    waiting = open_history(StationSettings(name="st1", history_url=away), tmp_path, while_away=True)
    try:
        recorder = waiting.recorder("st1")
        events = reading_events(time.time())
        recorder.remember(events)
        assert recorder.flush(30) and recorder.spool.size() > 0, recorder.error
        spooled = recorder.spool.items()
        assert spooled == [events]  # on disk and back, the readings too
    finally:
        waiting.close()
    store.write("st1", spooled[0])  # what the recorder replays once the database is back
    assert readings(store.events()) == READ

    refused = replace(events[1], tool=None)  # NOT NULL: refused and set aside
    store.recorder("st1").remember([refused])
    assert store.recorder("st1").flush(10) and store.recorder("st1").quarantined == 1
    kept = json.loads(store.recorder("st1").quarantine.read_text().splitlines()[0])
    assert kept["events"][0]["reading"] == asdict(refused.reading)


def sqlite_connection(store: HistoryStore):
    import sqlite3

    return sqlite3.connect(sa.make_url(store.url).database)


def test_a_burst_from_several_threads_loses_nothing(store):
    recorder = store.recorder("st1")
    base = time.time()
    per_thread, threads = 1250, 4
    calls = []

    def produce(k: int) -> None:
        for i in range(per_thread):
            started = time.perf_counter()
            recorder.remember([record(base + k * per_thread + i, trigger_id=f"T{k}-{i}",
                                      verdict="FAIL" if i % 50 == 0 else "PASS")])
            calls.append(time.perf_counter() - started)

    workers = [threading.Thread(target=produce, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert recorder.flush(60), recorder.error
    frame = store.events(limit=None)
    assert len(frame) == per_thread * threads
    assert frame["trigger_id"].nunique() == per_thread * threads
    counts = yield_over_time(store, by="day")
    assert counts["parts"].sum() == per_thread * threads
    assert counts["failed"].sum() == threads * per_thread // 50
    assert max(calls) < 0.5  # remember never waits for the database (timing: see benchmarks)


WRITER = """
import sys, time
from core.records.history import open_history
from core.records.verdicts import VerdictRecord
from core.store.settings import StationSettings

store = open_history(StationSettings(name="doomed", history_url=sys.argv[1]))
recorder = store.recorder("doomed")
n = 0
while True:
    recorder.remember([VerdictRecord(time.time(), "weld", "PASS", None, 0.1, 0.5, "v1", "trigger",
                                     trigger_id=f"P{n + i}") for i in range(40)])
    assert recorder.flush(30), recorder.error
    n += 40
    print(n, flush=True)  # P0 .. P(n-1) are committed
"""


def test_a_writer_killed_mid_write_leaves_every_committed_row(tmp_path):
    url = f"sqlite:///{tmp_path / 'history.sqlite'}"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, url], cwd=APP, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(APP)})
    committed = 0
    try:
        for line in writer.stdout:
            committed = int(line)
            if committed >= 2000:
                break
        assert committed >= 2000, "the writer stopped early"
        time.sleep(0.05)  # let it get into the middle of the next batches
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    assert writer.returncode == -signal.SIGKILL

    import sqlite3

    db = sqlite3.connect(tmp_path / "history.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    found = {row[0] for row in db.execute("SELECT trigger_id FROM verdict_events")}
    assert {f"P{i}" for i in range(committed)} <= found
    assert len(found) % 40 == 0  # whole batches only: a half-written transaction is absent
    db.close()
    reopened = open_history(StationSettings(history_url=url))  # recovers and keeps writing
    try:
        reopened.write("after", [record(time.time())])
        assert len(reopened.events(limit=None)) == len(found) + 1
    finally:
        reopened.close()


def migrated_to(url: str, revision: str, step=command.upgrade) -> sa.Engine:
    """A database at an older schema revision, as an older release created it (``step``:
    ``command.downgrade`` to take a newer one back there)."""
    engine = sa.create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        step(config, revision)
    return engine


def test_an_upgrade_from_revision_1_keeps_and_counts_old_rows(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    engine = migrated_to(url, "0001")
    t = 1_700_000_000.0  # rows as the first release wrote them
    rows = [(t, "old", "0", "weld", "v1", "PASS", None, 0.1, 0.1, 0.5, 9.0, "trigger", "A"),
            (t, "old", "0", "label", "v1", "FAIL", "torn", 0.8, 0.8, 0.5, 9.0, "trigger", "A"),
            (t + 60, "old", "0", "weld", "v1", "PASS", None, 0.2, 0.2, 0.5, 9.0, "trigger", "B"),
            (t + 120, "old", "0", "weld", "v1", "PASS", None, 0.2, 0.2, 0.5, 9.0, "heartbeat", None)]
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO verdict_events (time, station, camera, tool, version, verdict, defect_class,"
            " raw_score, score, threshold, latency_ms, cause, trigger_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.exec_driver_sql("INSERT INTO tool_changes (time, station, tool, action, details, actor) "
                             "VALUES (?, 'old', 'weld', 'threshold', '{\"threshold\": 0.5}', 'ann')",
                             (t - 10,))
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "0001"
    engine.dispose()

    store = open_history(StationSettings(history_url=url))
    try:
        assert store.revision() == HEAD
        frame = store.events(newest_first=False)
        assert list(frame["trigger_id"].fillna("-")) == ["A", "A", "B", "-"]
        assert list(frame["defect_class"].fillna("-")) == ["-", "torn", "-", "-"]
        assert store.changes().iloc[0]["actor"] == "ann"
        # the reports see the old rows: the migration counted them into the rollups
        fpy = first_pass_yield(store)
        assert (fpy.iloc[0]["parts"], fpy.iloc[0]["passed"]) == (2, 1)  # part A failed, B passed
        by_tool = yield_over_time(store, by="day").groupby("tool")["parts"].sum().to_dict()
        assert by_tool == {"label": 1, "weld": 2}  # the heartbeat is not a part
    finally:
        store.close()


# (seconds after T0, camera, tool, verdict, cause): triggered parts, then a conveyor seen in
# continuous mode by camera 2, whose two tools see one defective part come and go
T0 = 1_700_000_000.0  # quarter hours start at T0 - 800, T0 + 100, T0 + 1000
UPGRADE_EVENTS = [
    (0, "0", "weld", "PASS", "trigger"), (0, "0", "label", "FAIL", "trigger"),
    (60, "0", "weld", "PASS", "trigger"), (60, "0", "label", "PASS", "trigger"),
    (60, "1", "weld", "PASS", "trigger"),
    (120, "0", "weld", "PASS", "heartbeat"),
    (950, "2", "surface", "PASS", "change"), (950, "2", "edge", "PASS", "change"),
    (1010, "2", "surface", "FAIL", "change"), (1010, "2", "edge", "FAIL", "change"),
    (1020, "2", "surface", "PASS", "change"), (1020, "2", "edge", "PASS", "change"),
    (1030, "2", "surface", "PASS", "heartbeat"),
]


def part_counts_of(events: list[tuple], counts_as_part) -> dict[int, tuple[int, int, int]]:
    """Parts, failed and triggered per quarter hour: one part per camera frame with part events."""
    frames: dict = {}  # (quarter, camera, offset) -> (failed, triggered)
    for offset, camera, _tool, verdict, cause in events:
        if counts_as_part(cause, verdict):
            key = (int((T0 + offset) // 900), camera, offset)
            failed, triggered = frames.get(key, (False, False))
            frames[key] = (failed or verdict == "FAIL", triggered or cause == "trigger")
    tally: dict = {}
    for (quarter, _, _), (failed, triggered) in frames.items():
        parts, fails, triggers = tally.get(quarter, (0, 0, 0))
        tally[quarter] = (parts + 1, fails + failed, triggers + triggered)
    return tally


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request, tmp_path) -> str:
    """The URL of a new empty database: a SQLite file, or one on the module's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'old.sqlite'}"
    server = sa.make_url(request.getfixturevalue("postgres_url"))
    name = f"upgrade_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return server.set(database=name).render_as_string(hide_password=False)


def test_an_upgrade_from_revision_2_recounts_parts_by_the_part_rule(empty_database_url):
    """Revision 0002 counted every trigger or change frame as a part (the change back to PASS
    too); the upgrade recounts station 'old' so that its first-pass yield equals that of station
    'new', whose same events go through the recorder after the upgrade."""
    url = empty_database_url
    engine = migrated_to(url, "0002")
    rows = [{"time": T0 + offset, "station": "old", "camera": camera, "tool": tool, "version": "v1",
             "verdict": verdict, "defect_class": "crack" if verdict == "FAIL" else None,
             "raw_score": 0.5, "score": 0.9 if verdict == "FAIL" else 0.1, "threshold": 0.5,
             "latency_ms": 9.0, "cause": cause, "trigger_id": None,
             "quarter": int((T0 + offset) // 900), "score_bin": 18 if verdict == "FAIL" else 2}
            for offset, camera, tool, verdict, cause in UPGRADE_EVENTS]
    revision_2_parts = part_counts_of(UPGRADE_EVENTS, lambda cause, _: cause in ("trigger", "change"))
    events_table = sa.table("verdict_events", *[sa.column(c) for c in rows[0]])
    old_counts = sa.table("part_counts", *[sa.column(c) for c in ("station", "quarter", "parts", "failed")])
    with engine.begin() as conn:
        conn.execute(events_table.insert(), rows)
        conn.execute(old_counts.insert(), [{"station": "old", "quarter": q, "parts": p, "failed": f}
                                           for q, (p, f, _) in revision_2_parts.items()])
    engine.dispose()

    store = open_history(StationSettings(history_url=url))
    try:
        assert store.revision() == HEAD
        recorder = store.recorder("new")
        for offset, camera in sorted({(e[0], e[1]) for e in UPGRADE_EVENTS}):  # one call per frame
            recorder.remember([VerdictRecord(T0 + offset, tool, verdict, None, 0.5, 0.5, "v1", cause,
                                             camera) for o, c, tool, verdict, cause in UPGRADE_EVENTS
                               if (o, c) == (offset, camera)])
        assert recorder.flush(30), recorder.error

        expected = part_counts_of(UPGRADE_EVENTS, lambda cause, verdict: cause == "trigger" or (
            cause == "change" and verdict == "FAIL"))
        assert expected != revision_2_parts  # what the upgrade fixes
        with store.engine.connect() as conn:
            stored = conn.execute(sa.text("SELECT station, quarter, parts, failed, triggered "
                                          "FROM part_counts")).all()
        for station in ("old", "new"):
            assert {q: (p, f, t) for s, q, p, f, t in stored if s == station} == expected
        assert len(store.events(EventFilter(stations=("old",)), limit=None)) == len(UPGRADE_EVENTS)

        fpy = first_pass_yield(store).set_index("station")
        assert fpy.loc["old"].to_dict() == fpy.loc["new"].to_dict() == {
            "parts": 4, "passed": 2, "failed": 2, "triggered": 3, "fpy": pytest.approx(2 / 3)}
        for since, until in ((T0 - 30, T0 + 1015), (T0 + 30, T0 + 70), (T0 + 1000, T0 + 1100)):
            cut = first_pass_yield(store, EventFilter(since=since, until=until)).set_index("station")
            assert cut.loc["old"].equals(cut.loc["new"])  # rollup and edges agree (NaN fpy too)
    finally:
        store.close()


def test_an_upgrade_from_revision_5_keeps_old_events_and_adds_readings(empty_database_url):
    """Events written before readings existed keep their values and have none; new events
    carry theirs; a downgrade drops the columns again."""
    url = empty_database_url
    engine = migrated_to(url, "0005")
    old = {"time": T0, "station": "old", "camera": "0", "tool": "weld", "version": "v1",
           "verdict": "FAIL", "defect_class": "crack", "raw_score": 0.9, "score": 0.9,
           "threshold": 0.5, "latency_ms": 9.0, "cause": "trigger", "trigger_id": "A",
           "quarter": int(T0 // 900), "score_bin": 18, "error": None}
    with engine.begin() as conn:
        conn.execute(sa.table("verdict_events", *[sa.column(c) for c in old]).insert(), [old])
    engine.dispose()

    store = open_history(StationSettings(history_url=url))
    try:
        assert store.revision() == HEAD
        code = reading_events(T0 + 60)[0]
        nul = replace(code, tool="code128", reading=Reading("AB\x00C", "Code 128"))  # a NUL in it
        store.write("new", [code, nul])
        frame = store.events(newest_first=False)
        assert list(frame["trigger_id"]) == ["A", "P1", "P1"] and frame.iloc[0]["defect_class"] == "crack"
        assert readings(frame) == {"weld": [None] * 4, "serial": READ["serial"],
                                   "code128": ["AB\u2400C", "Code 128", None, None]}
    finally:
        store.close()

    engine = migrated_to(url, "0005", command.downgrade)
    with engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("verdict_events")}
        assert not {c for c in columns if c.startswith("reading_")} and "error" in columns
        assert conn.execute(sa.text("SELECT count(*) FROM verdict_events")).scalar() == 3
    engine.dispose()


def test_tool_changes_are_recorded_once_with_their_actor(store, workspace):
    remove = store.listen_to_tool_changes("st1")
    assert store.listen_to_tool_changes("st1") is remove  # a second call adds no second listener
    tool = ToolStore(workspace).create("weld")
    with acting_as("alice"):
        tool.update(threshold=0.7)
    remove()
    tool.update(threshold=0.8)  # no longer listened to
    store.record_change(ToolChange("weld", "note", {"why": "test"}, "bob", time.time()), "st9")
    assert store.recorder("st1").flush(10)
    changes = store.changes()
    assert list(changes["action"]) == ["note", "threshold", "created"]
    threshold = changes.iloc[1]
    assert (threshold["actor"], threshold["station"], threshold["details"]["new"]) == (
        "alice", "st1", 0.7)
    assert list(store.changes(EventFilter(stations=("st9",)))["actor"]) == ["bob"]


def test_retention_deletes_old_fail_images_only(workspace):
    photo = read_image(sample_paths("casting", 1, seed=3)["defect"][0])
    settings = StationSettings(name="st1", keep_fail_images=True, fail_image_days=30,
                               fail_image_max_kb=6)
    store = open_history(settings, root=workspace)
    try:
        now = time.time()
        store.write("st1", [record(now - 40 * 86400, verdict="FAIL", frame=photo),
                            record(now - 86400, verdict="FAIL", frame=photo),
                            record(now - 86400, verdict="PASS", frame=photo)])
        frame = store.events(newest_first=False)
        assert list(frame["has_image"]) == list(frame["verdict"] == "FAIL")  # FAIL events only
        fails = frame[frame["verdict"] == "FAIL"]
        old_id, new_id = (int(i) for i in fails["id"])  # oldest first
        jpeg = store.fail_image(new_id)
        assert len(jpeg) <= 6 * 1024
        roi = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert roi is not None and roi.shape[1] / roi.shape[0] == pytest.approx(100 / 120, rel=0.05)

        assert store.apply_retention(now) == 1
        assert store.fail_image(old_id) is None and store.fail_image(new_id) == jpeg
        assert len(store.events()) == 3  # every event stays
    finally:
        store.close()


def test_images_are_not_kept_unless_asked(store):
    photo = read_image(sample_paths("casting", 1, seed=3)["defect"][0])
    store.recorder("st1").remember([record(time.time(), verdict="FAIL", frame=photo)])
    assert store.recorder("st1").flush(10)
    assert not store.events()["has_image"].any()


def test_an_unreachable_database_is_one_clear_line():
    port = free_port()
    with pytest.raises(InspectorError, match="cannot open the history database") as info:
        open_history(StationSettings(history_url=f"postgresql+psycopg://nobody@127.0.0.1:{port}/x"))
    assert "\n" not in str(info.value)
    with pytest.raises(InspectorError, match="not a database URL"):
        StationSettings(history_url="not a url")
    with pytest.raises(InspectorError, match="not valid"):
        open_history(StationSettings(history_url="nosuchdatabase://x"))


# ------------------------------------------------------------------ PostgreSQL

@pytest.fixture(scope="module")
def postgres_url():
    """A throw-away PostgreSQL server on a free loopback port, with an empty database."""
    server = Postgres()
    yield server.url
    server.remove()


STATION = """
import sys, time
from core.records.history import open_history
from core.records.verdicts import VerdictRecord
from core.store.settings import StationSettings

url, station, parts = sys.argv[1], sys.argv[2], int(sys.argv[3])
recorder = open_history(StationSettings(name=station, history_url=url)).recorder(station)
base = time.time()
for i in range(parts):  # two tools per part; every 10th part fails on 'label'
    when = base + i * 0.001
    recorder.remember([
        VerdictRecord(when, "weld", "PASS", None, 0.1, 0.5, "v1", "trigger", trigger_id=f"{station}-{i}"),
        VerdictRecord(when, "label", "FAIL" if i % 10 == 0 else "PASS", "torn" if i % 10 == 0 else None,
                      0.9 if i % 10 == 0 else 0.2, 0.5, "v1", "trigger", trigger_id=f"{station}-{i}")])
assert recorder.close(60), recorder.error
print("done", flush=True)
"""


def test_two_stations_write_to_one_postgresql_at_once(postgres_url):
    parts = 1500
    stations = [subprocess.Popen([sys.executable, "-c", STATION, postgres_url, name, str(parts)],
                                 cwd=APP, env={**os.environ, "PYTHONPATH": str(APP)},
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for name in ("line1-st1", "line1-st2")]  # both migrate an empty database at once
    for process in stations:
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0 and "done" in out, err[-2000:]

    store = open_history(StationSettings(history_url=postgres_url))
    try:
        assert store.dialect == "postgresql" and store.revision() == HEAD
        frame = store.events(limit=None)
        assert frame.groupby("station").size().to_dict() == {"line1-st1": 2 * parts,
                                                             "line1-st2": 2 * parts}
        assert frame["trigger_id"].nunique() == 2 * parts
        fpy = first_pass_yield(store).set_index("station")
        expected_passed = parts - len(range(0, parts, 10))
        assert fpy["parts"].to_dict() == {"line1-st1": parts, "line1-st2": parts}
        assert fpy["passed"].to_dict() == {"line1-st1": expected_passed, "line1-st2": expected_passed}
        by_shift = yield_over_time(store, by="shift")  # the period SQL on PostgreSQL
        assert by_shift["parts"].sum() == 4 * parts and by_shift["failed"].sum() == 2 * (
            parts - expected_passed)
    finally:
        store.close()


OUTAGE_STATION = """
import sys
from core.records.history import open_history
from core.records.verdicts import VerdictRecord
from core.store.settings import StationSettings
from pathlib import Path

url, home, parts = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
recorder = open_history(StationSettings(name="st-away", history_url=url), home,
                        while_away=True).recorder("st-away")
for i in range(parts):
    recorder.remember([VerdictRecord(1.7e9 + i, "weld", "PASS", None, 0.1, 0.5, "v1", "trigger",
                                     trigger_id=f"part-{i}")])
assert recorder.flush(60) and recorder.spool.size() > 0, recorder.error
print("kept:", recorder.error, flush=True)
input()  # killed here, with every event on disk only
"""


def test_a_station_starts_while_its_database_is_away_and_a_kill_loses_no_event(tmp_path):
    server = Postgres()
    try:
        server.stop()  # the plant's database server is down when the station starts
        station = subprocess.Popen([sys.executable, "-c", OUTAGE_STATION, server.url, str(tmp_path),
                                    "300"], cwd=APP, env={**os.environ, "PYTHONPATH": str(APP)},
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        line = station.stdout.readline()
        assert line.startswith("kept:") and "unreachable" in line and "wait on disk" in line, (
            line + station.stderr.read()[-2000:] if not line else line)
        station.send_signal(signal.SIGKILL)
        station.wait(10)

        server.start()  # back: the next start of the station writes what waited
        settings = StationSettings(name="st-away", history_url=server.url)
        store = open_history(settings, tmp_path, while_away=True)
        recorder = store.recorder("st-away")
        wait_until(lambda: recorder.spool.size() == 0, 30, "the spooled events written")
        frame = store.events(limit=None)
        assert len(frame) == 300 and frame["trigger_id"].nunique() == 300
        assert recorder.problem is None
        store.close()
    finally:
        server.remove()


def test_a_row_the_database_refuses_is_set_aside_and_the_rows_behind_it_are_written(store):
    now = time.time()
    refused = replace(record(now, "weld", trigger_id="P1"), tool=None)  # NOT NULL: refused
    recorder = store.recorder("st1")
    recorder.remember([record(now, "label", trigger_id="P0")])
    recorder.remember([refused])
    recorder.remember([record(now + 1, "label", trigger_id="P2")])
    assert recorder.flush(10)
    assert list(store.events(newest_first=False)["trigger_id"]) == ["P0", "P2"]
    assert recorder.quarantined == 1 and "set aside" in recorder.problem
    kept = [json.loads(line) for line in recorder.quarantine.read_text().splitlines()]
    assert len(kept) == 1 and "NOT NULL" in kept[0]["reason"].upper()
    assert kept[0]["events"][0]["trigger_id"] == "P1"
