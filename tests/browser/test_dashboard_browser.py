"""The dashboard in a real browser: every page renders, and live inspection of a fake webcam
(a video of real casting photos: good parts, then defective ones) shows PASS, then FAIL, with a
verdict legible at 1280x720; triggered mode answers the keyboard; an unplugged camera shows what
to do and the page recovers when it streams again; two cameras each judge their own tools; the
threshold changes the verdict live (as a trial); the History page then counts the verdicts."""

from __future__ import annotations

import re
import time

import pytest

from core.station.live_station import LiveStation
from core.store.tools import ToolStore
from tests.browser.helpers import (
    ARTIFACTS,
    launch_chromium,
    new_page,
    open_page,
    press_stream_button,
    read_verdict,
    start_camera,
    unplug_camera,
    wait_verdict,
    webrtc_frame,
)

pytestmark = pytest.mark.slow

PAGES = {  # url path -> (the page's title, a text the page shows for the trained tool)
    "": ("Shopfloor Inspector", "Next steps"), "Capture": ("Capture", "Region of interest"),
    "Labeling": ("Labeling", "Move selected to"), "Training": ("Training", "Model versions"),
    "History": ("History", "Tool verdicts"), "Station": ("Station", "Station name")}
VERDICTS = {"PASS", "FAIL"}


@pytest.mark.parametrize("path", list(PAGES))
def test_page_renders(page, server, path):
    open_page(page, server["url"], path, *PAGES[path])
    page.screenshot(path=str(ARTIFACTS / f"page-{(path or 'home').lower()}.png"), full_page=True)
    assert page.locator("[data-testid='stException']").count() == 0


def open_live(page, server) -> None:
    """Live inspection, its camera ready to START (the previous test's page fed it: its feed is
    free once silent for FEED_LOST_S)."""
    open_page(page, server["url"], "Live_inspection", "Live inspection")
    wait_verdict(page, {"START CAMERA"}, LiveStation.FEED_LOST_S + 15)


def test_live_inspection_passes_good_parts_and_fails_defective_ones(page, server, station):
    segment_s = station["segment_s"]
    open_live(page, server)
    start_camera(page)

    # the video starts with good parts: the first verdict must be PASS
    verdict, t_pass = wait_verdict(page, VERDICTS, 60)
    page.screenshot(path=str(ARTIFACTS / "live-pass.png"))
    assert verdict == "PASS", "a good part was judged FAIL"

    # the operator reads it from afar: large, and in view at 1280x720 without scrolling
    banner = page.locator("div.verdict").first
    box = banner.bounding_box()
    font_px = float(banner.evaluate("e => parseFloat(getComputedStyle(e).fontSize)"))
    assert font_px >= 56 and box["height"] >= 90 and box["width"] >= 300, (font_px, box)
    assert 0 <= box["y"] and box["y"] + box["height"] <= 720, box

    # then the defective parts come into view
    wait_verdict(page, {"FAIL"}, segment_s + 30)
    page.screenshot(path=str(ARTIFACTS / "live-fail.png"))
    assert read_verdict(page) == "FAIL"
    # and the video loops back to good parts
    wait_verdict(page, {"PASS"}, segment_s + 30)
    page.screenshot(path=str(ARTIFACTS / "live-pass-again.png"))

    details = page.get_by_text(re.compile(r"casting.*threshold")).first.inner_text()
    assert "score" in details

    # the history has recorded the verdict changes (its writer commits within a second)
    time.sleep(2)
    open_page(page, server["url"], "History", "History", "Tool verdicts")
    page.screenshot(path=str(ARTIFACTS / "page-history-after-live.png"))
    metrics = {m.locator('[data-testid="stMetricLabel"]').inner_text().strip():
               m.locator('[data-testid="stMetricValue"]').inner_text().strip()
               for m in page.locator('[data-testid="stMetric"]').all()}
    # continuous mode: each defective part that came into view is a FAIL part (core.records.reports)
    assert int(metrics["FAIL"].replace(",", "")) >= 1, metrics
    page.get_by_role("tab", name="Events").click()
    page.get_by_text("event(s), newest first").first.wait_for(timeout=10_000)
    page.screenshot(path=str(ARTIFACTS / "page-history-events.png"))


def test_triggered_mode_judges_one_frame_per_key_press(page, server):
    open_live(page, server)
    page.get_by_text("Triggered", exact=True).click()
    page.get_by_role("button", name=re.compile("TRIGGER")).wait_for(timeout=30_000)
    start_camera(page)
    wait_verdict(page, {"PRESS TRIGGER"}, 30)
    page.wait_for_timeout(2000)
    assert read_verdict(page) == "PRESS TRIGGER"  # nothing is judged without a trigger

    detail = page.locator("div.verdict-detail").first
    held = []
    for _ in range(2):
        page.get_by_role("heading", name="Live inspection").click()  # focus out of the video
        page.keyboard.press("t")
        page.wait_for_function(  # a verdict taken at a new time
            """(previous) => {
                const d = document.querySelector('div.verdict-detail');
                const text = d ? d.innerText : '';
                return / tool\\(s\\) at /.test(text) && text !== previous;
            }""", arg=held[-1] if held else "", timeout=15_000)
        assert read_verdict(page) in VERDICTS
        held.append(detail.inner_text())
        page.wait_for_timeout(2500)  # held until the next trigger, whatever the camera shows
        assert detail.inner_text() == held[-1]
    page.screenshot(path=str(ARTIFACTS / "live-triggered.png"))
    assert held[0] != held[1], held  # the second press judged a new frame (a later time)
    page.get_by_text("Continuous", exact=True).click()  # leave the station as found


def test_unplugged_camera_shows_what_to_do_and_recovers(page, server):
    open_live(page, server)
    start_camera(page)
    wait_verdict(page, VERDICTS, 60)

    assert unplug_camera(page) >= 1
    started = time.time()
    wait_verdict(page, {"NO FRAMES"}, 20)
    message = page.get_by_text("stopped sending frames").first
    message.wait_for(timeout=5000)
    assert "check the cable" in message.inner_text() and "START" in message.inner_text()
    assert time.time() - started >= 2.0  # not before the camera had a chance to send
    page.screenshot(path=str(ARTIFACTS / "live-no-frames.png"))

    press_stream_button(page, "stop")
    wait_verdict(page, {"START CAMERA"}, 30)
    start_camera(page)  # the cable is back: START again
    wait_verdict(page, VERDICTS, 60)
    assert page.get_by_text("stopped sending frames").count() == 0


def test_a_refused_camera_says_how_to_allow_it(browser, server, station):
    refusing = launch_chromium(browser.browser_type, station["video"], allow_camera=False)
    try:
        page = new_page(refusing)
        open_live(page, server)
        press_stream_button(page, "start")
        webrtc_frame(page).get_by_text("NotAllowedError").wait_for(timeout=30_000)
        help_text = page.get_by_text("No picture after START?").first.inner_text()
        assert "NotAllowedError" in help_text and "allow camera access" in help_text
        page.screenshot(path=str(ARTIFACTS / "live-camera-refused.png"))
        assert read_verdict(page) == "START CAMERA"  # no verdict without frames
    finally:
        refusing.close()


def test_two_cameras_each_judge_their_own_tools(page, server, station):
    open_live(page, server)  # the station runs: a tool made now is not on its line
    store = ToolStore(station["home"])
    store.duplicate("casting", "casting side").update(camera="1")
    try:
        open_live(page, server)  # the new tool shows in 'Add to line'
        assert page.get_by_role("heading", name="Camera 1").count() == 0
        page.get_by_role("button", name="Add to line").click()
        page.get_by_role("heading", name="Camera 1").wait_for(timeout=30_000)
        assert page.get_by_role("heading", name="Camera 0").count() == 1
        start_camera(page, 0)
        start_camera(page, 1)
        banners = page.locator("div.verdict")
        page.wait_for_function(  # both cameras show a verdict of their own
            "() => [...document.querySelectorAll('div.verdict')].filter("
            "d => /^(PASS|FAIL)$/.test(d.innerText.trim())).length === 2", timeout=60_000)
        details = page.locator("div.verdict-detail")
        assert banners.count() == 2 and details.count() == 2
        page.screenshot(path=str(ARTIFACTS / "live-two-cameras.png"))
        tools = [page.get_by_text(re.compile(rf"^{name} (PASS|FAIL)")).count()
                 for name in ("casting", "casting side")]
        assert tools == [1, 1], tools  # each tool on the stream of its own camera
    finally:
        store.delete("casting side")


def test_threshold_slider_changes_the_verdict_without_restarting(page, server):
    """Last in this file: it leaves a trial threshold of 1.0 on the station's line."""
    open_live(page, server)
    start_camera(page)
    wait_verdict(page, VERDICTS, 60)
    slider = page.get_by_role("slider", name="Threshold (FAIL at or above)")
    slider.focus()
    slider.press("Home")  # threshold 0: every score fails
    wait_verdict(page, {"FAIL"}, 15)
    slider.focus()  # drawn anew with the station's new value
    slider.press("End")  # threshold 1: every score passes
    wait_verdict(page, {"PASS"}, 15)
    page.screenshot(path=str(ARTIFACTS / "live-threshold.png"))
    assert page.get_by_text(re.compile(r"threshold 1\.00")).count() >= 1
