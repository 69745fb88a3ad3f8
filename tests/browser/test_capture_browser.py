"""Capture in a real browser, as a new user does it: a fake webcam shows real casting parts on a
grey conveyor (640x480); the ROI is set on the camera picture (a box dragged on the canvas, then
exact numbers), saved, and Snapshot and Burst save exactly that crop while the stream keeps
playing, each photo appearing at once among the thumbnails. Then nothing any page asks for,
Live inspection with its camera started included, leaves the machine."""

from __future__ import annotations

import re

import pytest

from core.store.datasets import ToolDataset, read_image
from core.store.tools import ROI, ToolStore
from tests.browser import helpers
from tests.browser.helpers import (
    ARTIFACTS,
    leaving_the_machine,
    new_page,
    open_page,
    record_requests,
    start_camera,
    stream_playing,
)
from tests.conftest import on_conveyor

pytestmark = pytest.mark.slow

WIDTH, HEIGHT = 640, 480  # the fake webcam; the part (300x300 photo) sits at its centre
TIGHT = (170, 90, 300, 300)  # x, y, w, h of the ROI around it, in camera pixels
VIEWPORT_HEIGHT = 720


@pytest.fixture(scope="module")
def conveyor(tmp_path_factory, browser):
    """A workspace with a new tool (no photo, no ROI yet), its server, and a second Chromium
    (one Playwright per process: the session's) whose webcam films casting parts on a grey
    conveyor."""
    home = tmp_path_factory.mktemp("capture_station")
    ToolStore(home).create("impeller")
    parts = [on_conveyor(read_image(p), (HEIGHT, WIDTH))
             for cls in ("good", "defect") for p in helpers.casting_photos(cls, 300, 303)]
    video = helpers.write_y4m(home / "conveyor.y4m", [(parts, 6)], 10)
    filming = helpers.launch_chromium(browser.browser_type, video)
    try:
        with helpers.serving(home, home / "streamlit.log") as url:
            yield {"home": home, "url": url, "browser": filming}
    finally:
        filming.close()


def in_view(locator) -> bool:
    box = locator.bounding_box()
    return box is not None and 0 <= box["y"] and box["y"] + box["height"] <= VIEWPORT_HEIGHT


def test_roi_first_then_snapshot_and_burst_keep_the_stream_and_save_the_crop(conveyor):
    ARTIFACTS.mkdir(exist_ok=True)
    page = new_page(conveyor["browser"])
    store = ToolStore(conveyor["home"])
    try:
        open_page(page, conveyor["url"], "Capture", "Capture", "Press START under the video")
        start_camera(page)

        # step 1: the camera's picture with the current ROI (the whole frame), drag a box on it
        canvas = page.locator("canvas.upper-canvas").first
        canvas.wait_for(timeout=30_000)
        assert page.get_by_label("width (px)").input_value() == str(WIDTH)
        box = canvas.bounding_box()
        page.mouse.move(box["x"] + 100, box["y"] + 50)
        page.mouse.down()
        page.mouse.move(box["x"] + 300, box["y"] + 250, steps=8)
        page.mouse.up()
        page.wait_for_function(  # the numbers follow the box (canvas 400 px wide: x 1.6)
            "() => [...document.querySelectorAll('input')].some(i => i.value === '160')",
            timeout=15_000)
        assert page.get_by_text("Not saved yet").count() == 1
        for label, value in zip(("x (px)", "y (px)", "width (px)", "height (px)"), TIGHT):
            field = page.get_by_label(label)
            field.fill(str(value))
            field.press("Enter")
            page.wait_for_timeout(800)
        page.screenshot(path=str(ARTIFACTS / "capture-roi.png"))
        page.get_by_role("button", name="Save ROI").click()
        saved = page.get_by_text("ROI of 'impeller' saved: 300x300 px at x 170, y 90")
        saved.wait_for(timeout=15_000)
        assert in_view(saved)
        x, y, w, h = TIGHT
        assert store.get("impeller").config.roi == ROI.from_pixels(x, y, x + w, y + h, WIDTH, HEIGHT)
        assert stream_playing(page)

        # step 2: photos through the saved ROI, the stream never stops
        page.get_by_text("2 · Take photos").click()
        page.get_by_role("button", name="Snapshot").click()
        confirmation = page.get_by_text(re.compile(r"Saved 1 photo\(s\) into 'good' at"))
        confirmation.wait_for(timeout=15_000)
        assert in_view(confirmation)
        page.get_by_role("button", name="Delete").first.wait_for(timeout=10_000)
        assert page.get_by_role("button", name="Delete").count() == 1  # its thumbnail
        page.wait_for_timeout(1500)
        assert stream_playing(page), "Snapshot stopped the camera"
        page.screenshot(path=str(ARTIFACTS / "capture-snapshot.png"))

        page.get_by_role("button", name="Settings").click()
        for label, value in (("Photos per burst", "3"), ("Seconds between photos", "0.2")):
            field = page.get_by_label(label)
            field.fill(value)
            field.press("Enter")
            page.wait_for_timeout(800)
        page.keyboard.press("Escape")
        page.get_by_role("radiogroup", name="Save into class").get_by_text("defect").click()
        page.get_by_role("button", name="Burst of 3").click()
        page.get_by_text(re.compile(r"Saved 3 photo\(s\) into 'defect' at")).wait_for(timeout=20_000)
        page.get_by_role("button", name="Delete").nth(3).wait_for(timeout=15_000)  # newest first
        assert page.get_by_role("button", name="Delete").count() == 4
        assert stream_playing(page), "Burst stopped the camera"
        page.screenshot(path=str(ARTIFACTS / "capture-burst.png"))

        tool = store.get("impeller")
        ds = ToolDataset(tool.images_dir, tool.config.classes)
        assert ds.counts() == {"good": 1, "defect": 3}
        assert {read_image(p).shape for p in ds.files()} == {(300, 300, 3)}  # the ROI crop

        # uploading a photo keeps the Upload tab open (it used to jump back to the camera)
        page.get_by_role("tab", name="Upload photos").click()
        photo = helpers.casting_photos("good", 310, 311)[0]
        page.locator("input[type='file']").first.set_input_files(str(photo))
        page.get_by_role("button", name="Add to 'good'").click()
        page.get_by_text("Added 1 photo(s) to 'good'").wait_for(timeout=15_000)
        page.wait_for_timeout(1500)
        tab = page.get_by_role("tab", name="Upload photos")
        assert tab.get_attribute("aria-selected") == "true"
        assert ds.counts() == {"good": 2, "defect": 3}
    finally:
        page.context.close()


PAGES = {"": "Shopfloor Inspector", "Capture": "Capture", "Labeling": "Labeling",
         "Training": "Training", "Live_inspection": "Live inspection", "History": "History",
         "Station": "Station"}
CAMERA_PAGES = {"Capture", "Live_inspection"}


@pytest.mark.parametrize("path", list(PAGES))
def test_no_page_request_leaves_the_machine(browser, server, path):
    """Every request of the page, its frames (the stream widget's iframe) and its workers goes
    to the station itself: icons, fonts and components are served locally."""
    page = new_page(browser)
    try:
        requests = record_requests(page.context)
        open_page(page, server["url"], path, PAGES[path])
        if path in CAMERA_PAGES:
            start_camera(page)
        page.wait_for_timeout(4000)  # favicons, lazy components, the stream's negotiation
        assert requests, "no request was recorded"
        assert leaving_the_machine(requests) == []
    finally:
        page.context.close()
