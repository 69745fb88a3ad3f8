"""Reports on a small hand-checkable history: every expected figure is recomputed here from the
event list with plain Python (datetime and Counter), never copied from the reports' output."""

from __future__ import annotations

import json
import math
from collections import Counter
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from core.cli import main
from core.records.history import SCORE_BINS, EventFilter, open_history
from core.records.reports import (defect_pareto, export_events, first_pass_yield, score_distribution,
                                  yield_over_time)
from core.records.verdicts import Reading, VerdictRecord
from core.store.settings import StationSettings

BERLIN = ZoneInfo("Europe/Berlin")  # 2025-03-30 02:00 -> 03:00: a 23-hour day


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN).timestamp()


# (local time, station, camera, tool, verdict, defect, score, cause)
EVENTS = [
    ("2025-03-29 05:30:10", "st1", "0", "weld", "PASS", None, 0.12, "trigger"),
    ("2025-03-29 05:30:10", "st1", "0", "label", "FAIL", "torn", 0.81, "trigger"),
    ("2025-03-29 06:10:00", "st1", "0", "weld", "FAIL", "crack", 0.93, "trigger"),
    ("2025-03-29 06:10:00", "st1", "0", "label", "PASS", None, 0.31, "trigger"),
    ("2025-03-29 06:10:00", "st1", "1", "weld", "PASS", None, 0.05, "trigger"),
    ("2025-03-29 13:59:59", "st1", "0", "weld", "PASS", None, 0.49, "trigger"),
    ("2025-03-29 14:00:00", "st1", "0", "weld", "FAIL", "crack", 0.77, "trigger"),
    ("2025-03-29 14:07:30", "st1", "0", "weld", "PASS", None, 0.20, "heartbeat"),
    ("2025-03-29 22:30:00", "st2", "0", "weld", "FAIL", "porosity", 0.66, "change"),
    ("2025-03-29 22:45:00", "st2", "0", "weld", "PASS", None, 0.10, "change"),
    ("2025-03-30 01:59:00", "st2", "0", "weld", "FAIL", "crack", 0.95, "change"),
    ("2025-03-30 03:01:00", "st2", "0", "weld", "PASS", None, 0.15, "change"),
    ("2025-03-30 05:59:59", "st1", "0", "weld", "FAIL", "crack", 0.999, "trigger"),
    ("2025-03-30 05:59:59", "st1", "0", "label", "FAIL", None, 0.70, "trigger"),
    ("2025-03-30 09:00:00", "st1", "0", "label", "PASS", None, 1.0, "trigger"),
]
# Parts (core.records.history.PART_RULE): every trigger; in continuous mode a change to FAIL (a defective
# part comes into view), not the change back to PASS; never a heartbeat.
PARTS = [e for e in EVENTS if e[7] == "trigger" or (e[7] == "change" and e[4] == "FAIL")]
TRIGGERED = [e for e in EVENTS if e[7] == "trigger"]
SHIFT_STARTS = (6, 14, 22)


def label_read(when: str) -> Reading:
    """What the label tool (a text reading tool) read on the part of ``when``: its lot number."""
    return Reading(f"LOT {when[:10]}", "text", confidence=0.875)


@pytest.fixture
def history(workspace):
    store = open_history(StationSettings(name="st1"), root=workspace)
    for station in ("st1", "st2"):
        store.write(station, [
            VerdictRecord(at(t), tool, verdict, defect, score, 0.5, "v1", cause, camera,
                          reading=label_read(t) if tool == "label" else None)
            for t, st, camera, tool, verdict, defect, score, cause in EVENTS if st == station])
    yield store
    store.close()


def shift_of(local: datetime) -> tuple[datetime, str]:
    """The shift a local time falls in, by walking back to the latest shift start."""
    moment = local.replace(minute=0, second=0)
    while moment.hour not in SHIFT_STARTS:
        moment -= timedelta(hours=1)
    end = SHIFT_STARTS[(SHIFT_STARTS.index(moment.hour) + 1) % len(SHIFT_STARTS)]
    return moment, f"{moment.hour:02d}:00-{end:02d}:00"


def expected_counts(by: str, events=PARTS) -> dict:
    tally: dict = {}
    for t, _, _, tool, verdict, *_ in events:
        local = datetime.fromisoformat(t)
        period = {"hour": local.replace(minute=0, second=0),
                  "day": local.replace(hour=0, minute=0, second=0),
                  "shift": shift_of(local)[0]}[by]
        parts, failed = tally.get((period, tool), (0, 0))
        tally[(period, tool)] = (parts + 1, failed + (verdict == "FAIL"))
    return tally


@pytest.mark.parametrize("by", ["hour", "shift", "day"])
def test_yield_per_period_in_local_time(history, by):
    report = yield_over_time(history, by=by, zone=BERLIN)
    got = {(row.period.to_pydatetime(), row.tool): (row.parts, row.failed)
           for row in report.itertuples()}
    assert got == expected_counts(by)
    assert (report["passed"] == report["parts"] - report["failed"]).all()
    triggered = expected_counts(by, TRIGGERED)
    for _, row in report.iterrows():  # the yield: PASS share of the triggered parts only
        parts, failed = triggered.get((row["period"].to_pydatetime(), row["tool"]), (0, 0))
        assert row["triggered"] == parts
        if parts:
            assert row["yield"] == pytest.approx(1 - failed / parts)
        else:
            assert math.isnan(row["yield"])
    if by == "shift":
        names = {(row.period.to_pydatetime(), row.tool): row.shift for row in report.itertuples()}
        for t, _station, _camera, tool, *_ in PARTS:
            start, name = shift_of(datetime.fromisoformat(t))
            assert names[(start, tool)] == name
    if by == "day":  # the 23-hour DST day is one day
        assert sorted({p.date().isoformat() for p in report["period"]}) == ["2025-03-29", "2025-03-30"]


@pytest.mark.parametrize("since, until", [
    ("2025-03-29 06:05:00", "2025-03-30 02:00:30"),  # partial quarters at both ends
    ("2025-03-29 05:30:10", "2025-03-29 05:30:11"),  # inside one quarter hour
    ("2025-03-29 14:00:00", "2025-03-30 06:00:00"),  # whole quarters only
])
def test_filters_cut_exactly_at_the_second(history, since, until):
    where = EventFilter(since=at(since), until=at(until))
    inside = [e for e in PARTS if at(since) <= at(e[0]) < at(until)]
    report = yield_over_time(history, where, by="day", zone=BERLIN)
    assert report["parts"].sum() == len(inside)
    assert report["failed"].sum() == sum(e[4] == "FAIL" for e in inside)
    fpy = first_pass_yield(history, where)
    assert fpy["parts"].sum() == len({(e[1], e[2], e[0]) for e in inside})  # a frame spans tools
    assert fpy["triggered"].sum() == len({(e[1], e[2], e[0]) for e in inside if e[7] == "trigger"})
    assert score_distribution(history, where)["count"].sum() == len(inside)


def test_tool_and_station_filters(history):
    where = EventFilter(tools=("label",), stations=("st1",))
    report = yield_over_time(history, where, by="day", zone=BERLIN)
    label = [e for e in PARTS if e[3] == "label" and e[1] == "st1"]
    assert report["parts"].sum() == len(label) and set(report["tool"]) == {"label"}
    with_heartbeats = yield_over_time(history, EventFilter(causes=("heartbeat",)), by="day")
    assert with_heartbeats["parts"].sum() == sum(e[7] == "heartbeat" for e in EVENTS)


def test_defect_pareto(history):
    fails = Counter((e[3], e[5] or "(none)") for e in PARTS if e[4] == "FAIL")
    report = defect_pareto(history)
    assert dict(zip(zip(report["tool"], report["defect_class"]), report["fails"])) == fails
    assert list(report["fails"]) == sorted(fails.values(), reverse=True)
    assert report["cumulative"].iloc[-1] == pytest.approx(1.0)
    assert report["share"].iloc[0] == pytest.approx(max(fails.values()) / sum(fails.values()))


def test_score_distribution(history):
    bins = Counter((e[3], e[4], min(math.floor(e[6] * SCORE_BINS), SCORE_BINS - 1)) for e in PARTS)
    report = score_distribution(history)
    got = {(r.tool, r.verdict, round(r.bin_low * SCORE_BINS)): r.count for r in report.itertuples()}
    assert got == bins
    assert (report["bin_high"] - report["bin_low"]).round(9).eq(1 / SCORE_BINS).all()


def test_first_pass_yield_per_station(history):
    """A part spans the tools judged on one frame of a camera; st2, seen in continuous mode, has
    two defective parts and no yield (the changes back to PASS are no parts)."""
    parts: dict = {}  # (station, camera, time) -> passed, triggered
    for t, station, camera, _tool, verdict, _defect, _score, cause in PARTS:
        passed, _ = parts.get((station, camera, t), (True, False))
        parts[(station, camera, t)] = (passed and verdict == "PASS", cause == "trigger")
    report = first_pass_yield(history).set_index("station")
    for station in ("st1", "st2"):
        mine = [part for (s, _, _), part in parts.items() if s == station]
        passed, triggered = sum(p for p, _ in mine), sum(t for _, t in mine)
        assert report.loc[station, "parts"] == len(mine)
        assert report.loc[station, "passed"] == passed
        assert report.loc[station, "failed"] == len(mine) - passed
        assert report.loc[station, "triggered"] == triggered
        if triggered:
            assert report.loc[station, "fpy"] == pytest.approx(passed / triggered)
        else:
            assert math.isnan(report.loc[station, "fpy"])
    assert (report.loc["st2", "parts"], report.loc["st2", "triggered"]) == (2, 0)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_round_trips_every_event_in_chunks(history, tmp_path, fmt):
    out = tmp_path / f"events.{fmt}"
    assert export_events(history, out, fmt, chunk_rows=4) == len(EVENTS)  # several chunks
    back = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
    original = history.events(limit=None, newest_first=False)
    if fmt == "csv":
        back["time"] = pd.to_datetime(back["time"], utc=True)
    assert list(back.columns) == list(original.columns)
    assert (back["time"] == original["time"]).all()
    for column in ("id", "station", "tool", "verdict", "defect_class", "score", "cause", "has_image",
                   "reading_text", "reading_format"):
        assert back[column].fillna("-").tolist() == original[column].fillna("-").tolist()
    reads = back[back["tool"] == "label"]
    assert reads["reading_text"].tolist() == [label_read(e[0]).text for e in
                                              sorted(EVENTS, key=lambda e: at(e[0])) if e[3] == "label"]
    assert set(reads["reading_confidence"]) == {0.875} and back["reading_grade"].isna().all()
    assert back["reading_confidence"].isna().sum() == original["reading_confidence"].isna().sum()
    assert back.loc[back["tool"] == "weld", "reading_text"].isna().all()  # a classifier reads none
    assert [round(t.timestamp(), 6) for t in back["time"]] == [round(at(e[0]), 6) for e in
                                                                sorted(EVENTS, key=lambda e: at(e[0]))]
    assert not list(tmp_path.glob(".*partial"))


def test_cli_reports_and_exports(history, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Berlin")
    assert main(["history", "report", "pareto", "--json", "--tool", "weld"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["defect_class"], r["fails"]) for r in rows} == {
        (d, n) for (tool, d), n in Counter((e[3], e[5]) for e in PARTS if e[4] == "FAIL").items()
        if tool == "weld"}
    assert main(["history", "report", "yield", "--by", "shift", "--since", "2025-03-29",
                 "--until", "2025-03-29", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sum(r["parts"] for r in rows) == sum(e[0].startswith("2025-03-29") for e in PARTS)
    out = tmp_path / "e.csv"
    assert main(["history", "export", "--format", "csv", "--out", str(out), "--station", "st2"]) == 0
    assert len(pd.read_csv(out)) == sum(e[1] == "st2" for e in EVENTS)
    assert main(["history", "report", "yield", "--shifts", "06:00,25:00"]) == 2
    assert main(["history", "report", "fpy", "--since", "2025-03-30", "--until", "2025-03-29"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("error: ") for line in errors)
