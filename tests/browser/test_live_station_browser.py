"""The station's live state in real Chromium browsers: a fake webcam shows real casting parts on
a grey background (the tool's ROI around them), two browser contexts on one server. A second
browser opening Live changes nothing in the first (mode, tools, threshold, pending trigger); a
threshold moved in one shows in the other as TRIAL and lands in the audit trail; deleting a
running tool stops its verdicts on the next frames; a trial version shows its agreement and is
promoted; START/STOP and the threshold stay in view at 1280x720 with the sidebar collapsed."""

from __future__ import annotations

import json
import re
import shutil
import time

import cv2
import numpy as np
import pytest

from core.engine.preprocessing import crop_roi
from core.records.history import EventFilter, open_history
from core.security.users import UserStore
from core.store.settings import load_settings
from core.store.tools import ROI, ToolStore
from tests.browser import helpers
from tests.browser.helpers import (
    ARTIFACTS,
    BrowserError,
    log_in,
    new_page,
    open_page,
    read_verdict,
    start_camera,
    wait_verdict,
    within,
)

pytestmark = pytest.mark.slow

WIDTH, HEIGHT, BOX = 480, 360, (120, 60, 360, 300)  # the part's place on the grey conveyor
ROI_BOX = ROI.from_pixels(*BOX, WIDTH, HEIGHT)
VERDICTS = {"PASS", "FAIL"}
ROLES = {"kiosk": "operator", "bob": "engineer", "ann": "engineer"}  # who logs in where


def on_conveyor(photo: np.ndarray) -> np.ndarray:
    frame = np.full((HEIGHT, WIDTH, 3), 110, np.uint8)
    x0, y0, x1, y1 = BOX
    frame[y0:y1, x0:x1] = cv2.resize(photo, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    return frame


@pytest.fixture(scope="module")
def line_home(station, tmp_path_factory) -> dict:
    """The session's trained casting tool in a workspace of its own, its ROI around the part,
    a second version to try (a copy of the first), and the conveyor video."""
    home = tmp_path_factory.mktemp("live_station")
    shutil.copytree(station["home"] / "tools", home / "tools")
    if (station["home"] / "cache").is_dir():
        shutil.copytree(station["home"] / "cache", home / "cache")
    tool = ToolStore(home).get("casting")
    tool.update(roi=ROI_BOX)
    first = tool.config.active_version
    copy = shutil.copytree(tool.version_dir(first), tool.versions_dir / "v999-trial")
    meta = json.loads((copy / "meta.json").read_text())
    (copy / "meta.json").write_text(json.dumps({**meta, "id": copy.name, "created": "later"}))
    try:
        picked = helpers.clear_photos(
            tool, lambda im: crop_roi(helpers.webrtc_round_trip(on_conveyor(im)), ROI_BOX))
    except BrowserError as exc:
        pytest.fail(str(exc))
    users = UserStore(open_history(load_settings(home), home).engine)
    for name, role in ROLES.items():
        users.add(name, role, f"{name}-password")
    video = helpers.write_y4m(home / "conveyor.y4m", [
        ([on_conveyor(im) for im in picked["good"]], 8),
        ([on_conveyor(im) for im in picked["defect"]], 8)], 10)
    return {"home": home, "video": video, "first": first}


@pytest.fixture(scope="module")
def url(line_home, tmp_path_factory):
    log = tmp_path_factory.mktemp("live_station_server") / "streamlit.log"
    with helpers.serving(line_home["home"], log) as address:
        yield address


@pytest.fixture(scope="module")
def chromium(browser, line_home):
    """A second Chromium of the session's Playwright, its webcam showing the conveyor."""
    conveyor = helpers.launch_chromium(browser.browser_type, line_home["video"])
    yield conveyor
    conveyor.close()


@pytest.fixture(scope="module")
def kiosk(chromium, url):
    """The operator's browser, feeding camera 0 for the whole module."""
    ARTIFACTS.mkdir(exist_ok=True)
    page = new_page(chromium)
    open_as(page, url, "Live_inspection", "Live inspection", "kiosk")
    start_camera(page)
    wait_verdict(page, VERDICTS, 60)
    yield page
    page.context.close()


@pytest.fixture
def laptop(chromium):
    """An engineer's browser, opened after the kiosk."""
    page = new_page(chromium)
    yield page
    page.context.close()


def open_as(page, url: str, path: str, title: str, name: str, text: str | None = None) -> None:
    """Open a page and log in (every page load is a new session, logged out)."""
    open_page(page, url, path, title)
    log_in(page, name, f"{name}-password")
    page.get_by_text(f"Logged in as {name} ({ROLES[name]})").wait_for(timeout=20_000)
    if text:
        page.get_by_text(text).first.wait_for(timeout=30_000)


def audit(home, action: str):
    history = open_history(load_settings(home), home)
    changes = history.changes()
    return changes[changes["action"] == action]


def threshold_slider(page):
    """The threshold slider as last drawn (while a rerun replaces it, the old one may linger)."""
    return page.get_by_role("slider", name="Threshold (FAIL at or above)").last


def threshold_of(page) -> float:
    return float(threshold_slider(page).input_value())


def test_a_second_browser_opening_live_changes_nothing_in_the_first(kiosk, laptop, url, line_home):
    kiosk.get_by_text("Triggered", exact=True).click()
    wait_verdict(kiosk, {"PRESS TRIGGER"}, 20)
    kiosk.get_by_role("heading", name="Live inspection").click()  # focus out of the video
    kiosk.keyboard.press("t")
    held, _ = wait_verdict(kiosk, VERDICTS, 20)
    detail = kiosk.locator("div.verdict-detail").first.inner_text()
    state = (line_home["home"] / "line.json").read_bytes()
    threshold = threshold_of(kiosk)

    open_as(laptop, url, "Live_inspection", "Live inspection", "bob", "is fed by browser")
    laptop.screenshot(path=str(ARTIFACTS / "live-station-viewer.png"))
    assert laptop.frame_locator("iframe[title*='webrtc']").locator("video").count() == 0
    assert laptop.get_by_role("radio", name="Triggered").is_checked()
    assert laptop.get_by_role("button", name=re.compile("Use this browser's camera")).count() == 1
    kiosk.wait_for_timeout(2500)
    assert kiosk.get_by_role("radio", name="Triggered").is_checked()  # still the kiosk's mode
    assert read_verdict(kiosk) == held and kiosk.locator("div.verdict-detail").first.inner_text() == detail
    assert threshold_of(kiosk) == threshold
    assert (line_home["home"] / "line.json").read_bytes() == state
    assert read_verdict(laptop) == held  # the viewer shows the station's verdict
    kiosk.get_by_text("Continuous", exact=True).click()
    wait_verdict(kiosk, VERDICTS, 20)


def test_a_threshold_moved_in_one_browser_shows_in_the_other_and_the_audit(kiosk, laptop, url,
                                                                           line_home):
    open_as(laptop, url, "Live_inspection", "Live inspection", "bob", "is fed by browser")
    slider = threshold_slider(laptop)
    slider.focus()
    slider.press("End")  # threshold 1: every part passes, tried live, not saved
    within(10, lambda: kiosk.get_by_text("TRIAL threshold 1.00").count() > 0
           and threshold_of(kiosk) == 1.0, "the kiosk showing the laptop's trial threshold")
    wait_verdict(kiosk, {"PASS"}, 15)
    kiosk.screenshot(path=str(ARTIFACTS / "live-station-trial-threshold.png"))
    assert "by bob" in kiosk.get_by_text("TRIAL threshold 1.00").first.inner_text()
    row = audit(line_home["home"], "threshold (trial)").iloc[0]
    assert row["actor"] == "bob" and row["details"]["new"] == 1.0
    saved = ToolStore(line_home["home"]).get("casting").config.threshold
    assert saved < 1.0  # a trial until someone saves it

    kiosk.get_by_role("button", name="Revert").click()
    within(30, lambda: abs(threshold_of(laptop) - saved) < 0.006, "the laptop showing the revert")
    kiosk.wait_for_timeout(3000)  # refreshes in flight bring no old value back
    assert abs(threshold_of(kiosk) - saved) < 0.006 and abs(threshold_of(laptop) - saved) < 0.006
    assert audit(line_home["home"], "trial reverted").iloc[0]["actor"] == "kiosk"


def test_deleting_a_running_tool_stops_its_verdicts_on_the_next_frames(kiosk, laptop, url,
                                                                       line_home):
    home = line_home["home"]
    ToolStore(home).duplicate("casting", "casting copy")  # not on the line until added
    open_as(laptop, url, "Live_inspection", "Live inspection", "bob", "Tool not on the line")
    laptop.get_by_role("button", name="Add to line").click()
    within(20, lambda: kiosk.get_by_text(re.compile(r"^casting copy (PASS|FAIL)")).count() > 0,
           "the added tool judging")
    history = open_history(load_settings(home), home)
    copies = EventFilter(tools=("casting copy",))
    within(30, lambda: len(history.events(copies)) > 0, "an event of the added tool")

    open_as(laptop, url, "", "Shopfloor Inspector", "bob")
    laptop.get_by_role("tab", name=re.compile("delete")).click()
    laptop.locator("[data-testid='stSelectbox']:visible").filter(has_text="Tool").first.click()
    laptop.keyboard.type("casting copy")
    laptop.keyboard.press("Enter")
    laptop.get_by_role("button", name="Delete...").click()
    laptop.get_by_role("button", name="Yes, delete 'casting copy'").click()
    laptop.get_by_text("Deleted tool 'casting copy'").wait_for(timeout=20_000)
    deleted = time.time()
    within(5, lambda: kiosk.get_by_text(re.compile(r"^casting copy (PASS|FAIL)")).count() == 0,
           "the deleted tool leaving the verdict panel")
    kiosk.screenshot(path=str(ARTIFACTS / "live-station-after-delete.png"))
    casting = EventFilter(tools=("casting",), since=deleted + 1)
    within(30, lambda: len(history.events(casting)) > 0, "a verdict change of the other tool")
    late = history.events(EventFilter(tools=("casting copy",), since=deleted + 0.5))
    assert late.empty, late
    reason = audit(home, "removed from the line").iloc[0]["details"]["reason"]
    assert "deleted" in reason


def test_a_trial_shows_its_agreement_and_is_promoted(kiosk, laptop, url, line_home):
    open_as(laptop, url, "Training", "Training", "ann", "Model versions")
    laptop.get_by_role("button", name=re.compile(r"^Run v999-trial as trial on the line")).click()
    within(30, lambda: kiosk.get_by_text(re.compile(r"TRIAL casting v999-trial .* agrees on")).count() > 0,
           "the kiosk showing the trial's agreement")
    kiosk.screenshot(path=str(ARTIFACTS / "live-station-trial.png"))
    laptop.wait_for_timeout(3000)
    laptop.reload()
    open_as(laptop, url, "Training", "Training", "ann", "runs as a trial")  # a new session
    info = laptop.get_by_text(re.compile("runs as a trial")).first.inner_text()
    assert "frames judged" in info and "agrees with" in info
    assert re.search(r"agrees with \S+ on 100\.0%", info), info  # the same model, another id
    laptop.get_by_role("button", name="Promote v999-trial to active").click()
    laptop.get_by_text("is the active model").first.wait_for(timeout=20_000)
    within(10, lambda: kiosk.get_by_text(re.compile(r"^casting (PASS|FAIL).*v999-trial")).count() > 0,
           "the promoted version judging on the line")
    assert ToolStore(line_home["home"]).get("casting").config.active_version == "v999-trial"
    assert audit(line_home["home"], "promoted").iloc[0]["actor"] == "ann"


def test_live_controls_are_in_view_at_720p_with_the_sidebar_collapsed(kiosk):
    kiosk.get_by_test_id("stSidebar").hover()  # its collapse button shows on hover
    kiosk.get_by_role("button", name="Collapse sidebar").click()
    kiosk.wait_for_timeout(1500)
    kiosk.screenshot(path=str(ARTIFACTS / "live-station-no-sidebar.png"))
    stop = helpers.webrtc_frame(kiosk).get_by_role("button", name=re.compile("^stop$", re.I))
    frame_box = kiosk.locator("iframe[title*='webrtc']").first.bounding_box()
    inner = stop.bounding_box()
    slider = threshold_slider(kiosk).bounding_box()
    banner = kiosk.locator("div.verdict").first.bounding_box()
    for what, box in (("STOP", inner), ("threshold", slider), ("verdict", banner)):
        assert box is not None and box["y"] + box["height"] <= 720, (what, box, frame_box)
