"""The History page driven headless with AppTest over a history store seeded in its workspace."""

from __future__ import annotations

import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.records.history import open_history
from core.records.verdicts import Reading, VerdictRecord
from core.store.datasets import read_image
from core.store.settings import StationSettings
from core.store.tools import ToolChange
from tests.conftest import sample_paths

APP = Path(__file__).resolve().parents[1]
if str(APP) not in sys.path:  # the pages' shared helpers are the package ``pages``
    sys.path.insert(0, str(APP))


@pytest.fixture
def seeded(workspace):
    """Today: 'weld' 6 parts (2 FAIL), 'label' 4 parts (1 FAIL, each with the lot number it
    read) on station st1, 3 parts of 'weld' on st2 (all PASS); ten days ago: 5 'weld' parts on
    st1 (out of the default range)."""
    settings = StationSettings(name="st1", keep_fail_images=True)
    store = open_history(settings, root=workspace)
    photo = read_image(sample_paths("casting", 1, seed=5)["defect"][0])
    noon = datetime.combine(date.today(), datetime.min.time()).replace(hour=12).timestamp()

    def part(when: float, tool: str, fail: bool) -> VerdictRecord:
        return VerdictRecord(when, tool, "FAIL" if fail else "PASS", "crack" if fail else None,
                             0.9 if fail else 0.1, 0.5, "v2", "trigger", "0", None, 10.0, None,
                             (0, 0, 100, 100), photo if fail else None,
                             reading=Reading(f"LOT-{when:.0f}", "text") if tool == "label" else None)

    store.write("st1", [part(noon + i, "weld", i < 2) for i in range(6)]
                + [part(noon + 10 + i, "label", i == 0) for i in range(4)]
                + [part(noon - 10 * 86400 + i, "weld", False) for i in range(5)],
                [ToolChange("weld", "threshold", {"old": 0.4, "new": 0.5}, "alice", noon - 60)])
    store.write("st2", [part(noon + 20 + i, "weld", False) for i in range(3)])
    yield store
    store.close()


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_history_page_shows_counts_and_filters_change_them(seeded):
    at = AppTest.from_file(str(APP / "pages/5_History.py"), default_timeout=60).run()
    assert not at.exception and not at.error, [e.value for e in at.exception]
    assert metrics(at) == {"Tool verdicts": "13", "PASS": "10", "FAIL": "3", "Yield": "76.9%"}
    assert at.download_button[0].label == "Download events (CSV)"
    events = at.dataframe[-2].value  # tabs render in order: FPY, Pareto, events, changes
    assert len(events) == 13 and set(events["Station"]) == {"st1", "st2"}
    assert events["Image"].tolist().count("yes") == 3
    label = events[events["Tool"] == "label"]
    assert label["Read"].str.startswith("LOT-").all() and set(label["Read as"]) == {"text"}
    assert set(events.loc[events["Tool"] == "weld", "Read"]) == {""}  # a classifier reads nothing
    changes = at.dataframe[-1].value
    assert changes.iloc[0]["By"] == "alice" and changes.iloc[0]["Change"] == "threshold"
    fpy = at.dataframe[0].value.set_index("Station")
    assert fpy.loc["st1", "Parts"] == 10 and fpy.loc["st2", "First-pass yield"] == "100.0%"

    at.multiselect(key="history_tools").select("weld").run()
    assert metrics(at)["Tool verdicts"] == "9" and metrics(at)["FAIL"] == "2"
    at.multiselect(key="history_stations").select("st2").run()
    assert metrics(at) == {"Tool verdicts": "3", "PASS": "3", "FAIL": "0", "Yield": "100.0%"}

    at.multiselect(key="history_stations").unselect("st2").run()
    at.date_input(key="history_dates").set_value((date.today() - timedelta(days=12),
                                                  date.today())).run()
    assert metrics(at)["Tool verdicts"] == "14"  # + the 5 weld parts of ten days ago
    assert not at.exception and not at.error


def test_history_page_with_no_history_says_what_to_do(workspace):
    at = AppTest.from_file(str(APP / "pages/5_History.py"), default_timeout=60).run()
    assert not at.exception and not at.error
    assert "No part inspected in this range" in at.info[0].value
    assert metrics(at)["Tool verdicts"] == "0"


def test_continuous_mode_counts_defective_parts_not_verdict_changes(workspace):
    """A conveyor seen in continuous mode: good, a defective part, good, two defective parts
    back to back, good. The station records a verdict *change* each time; the page counts the
    defective parts it can see (2: the two back to back look like one) and no yield, since the
    good parts were never counted one by one; two triggered parts give the yield. First-pass
    yield counts its parts alike."""
    store = open_history(StationSettings(name="st1"), root=workspace)
    noon = datetime.combine(date.today(), datetime.min.time()).replace(hour=12).timestamp()
    changes = ["PASS", "FAIL", "PASS", "FAIL", "PASS"]

    def event(i: int, verdict: str, cause: str) -> VerdictRecord:
        return VerdictRecord(noon + i, "weld", verdict, "crack" if verdict == "FAIL" else None,
                             0.9 if verdict == "FAIL" else 0.1, 0.5, "v1", cause)

    store.write("st1", [event(i, v, "change") for i, v in enumerate(changes)]
                + [event(10, "PASS", "heartbeat")])
    try:
        at = AppTest.from_file(str(APP / "pages/5_History.py"), default_timeout=60).run()
        assert not at.exception and not at.error
        assert metrics(at) == {"Tool verdicts": "2", "PASS": "0", "FAIL": "2", "Yield": "-"}
        events = next(d.value for d in at.dataframe if "Verdict" in d.value)
        assert len(events) == 6 and "Read" not in events  # no reading tool: no empty column
        assert "2 FAIL part(s) seen in continuous mode" in at.caption[0].value
        rule = " ".join(m.value for m in at.markdown)
        assert "**change** event: a change to FAIL is one defective part" in rule
        fpy = at.dataframe[0].value.set_index("Station").loc["st1"]
        assert (fpy["Parts"], fpy["Failed"], fpy["Triggered"], fpy["First-pass yield"]) == (2, 2, 0, "-")

        store.write("st1", [event(20, "PASS", "trigger"), event(21, "FAIL", "trigger")])
        at.run()
        assert metrics(at) == {"Tool verdicts": "4", "PASS": "1", "FAIL": "3", "Yield": "50.0%"}
        fpy = at.dataframe[0].value.set_index("Station").loc["st1"]
        assert (fpy["Parts"], fpy["Passed first time"], fpy["First-pass yield"]) == (4, 1, "50.0%")
    finally:
        store.close()
