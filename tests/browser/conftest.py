"""A real station for browser tests: a trained tool, a fake webcam video, Streamlit and Chromium.

Chromium comes from Debian (``apt-get install -y chromium``), never from ``playwright install``;
the tests fail with that instruction when /usr/bin/chromium is missing. The shared pieces (video,
server, browser, reading the verdict) live in ``helpers.py``, also used by
``benchmarks/dashboard_live.py``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import cv2
import pytest

if str(Path(__file__).resolve().parents[2]) not in sys.path:  # for ``tests.browser.helpers``
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from core.engine.training import TrainingOptions, train_tool  # noqa: E402
from core.store.datasets import ToolDataset  # noqa: E402
from core.store.tools import ToolStore  # noqa: E402
from tests.browser import helpers  # noqa: E402
from tests.browser.helpers import APP, ARTIFACTS, BrowserError  # noqa: E402

FRAME = 320  # the fake webcam's frame size (square, like the casting photos)
FPS = 10
SEGMENT_S = 12  # seconds of good parts, then of defective parts, then the video loops
TRAIN_PER_CLASS = 10


def _frame(photo):
    return cv2.resize(photo, (FRAME, FRAME), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="session")
def station(tmp_path_factory) -> dict:
    """A workspace with tool 'casting' trained on 10 + 10 real photos, and the fake webcam
    video: clearly good parts for SEGMENT_S seconds, then clearly defective ones."""
    home = tmp_path_factory.mktemp("browser_station")
    cache = APP / "models" / "cache"
    if cache.is_dir():
        shutil.copytree(cache, home / "cache")
    try:
        tool = ToolStore(home).create("casting", allow_flips=True, smoothing=3)
        ds = ToolDataset(tool.images_dir, tool.config.classes)
        for cls in ("good", "defect"):
            for path in helpers.casting_photos(cls, 0, TRAIN_PER_CLASS):
                ds.add_file(cls, path.read_bytes(), path.name)
        train_tool(tool, options=TrainingOptions(views_per_image=2, folds=3))
        tool = ToolStore(home).get("casting")
        # unseen photos the model is clearly sure about, after a codec round trip
        picked = helpers.clear_photos(tool, lambda im: helpers.webrtc_round_trip(_frame(im)))
    except BrowserError as exc:
        pytest.fail(str(exc))
    video = helpers.write_y4m(home / "webcam.y4m", [
        ([_frame(im) for im in picked["good"]], SEGMENT_S),
        ([_frame(im) for im in picked["defect"]], SEGMENT_S)], FPS)
    return {"home": home, "video": video, "threshold": tool.config.threshold,
            "segment_s": SEGMENT_S}


@pytest.fixture(scope="session")
def server(station, tmp_path_factory):
    """``streamlit run Home.py`` on a free port, with INSPECTOR_HOME set to the station."""
    log = tmp_path_factory.mktemp("server") / "streamlit.log"
    with helpers.serving(station["home"], log) as url:
        yield {"url": url, "log": log}


@pytest.fixture(scope="session")
def playwright_session():
    """The session's one Playwright (a process can run only one): every Chromium comes from it."""
    if not helpers.CHROMIUM.is_file():
        pytest.fail("Debian chromium is required for the browser tests: "
                    "apt-get update && apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="session")
def browser(station, playwright_session):
    chromium = helpers.launch_chromium(playwright_session.chromium, station["video"])
    yield chromium
    chromium.close()


@pytest.fixture
def page(browser, server):
    ARTIFACTS.mkdir(exist_ok=True)
    page = helpers.new_page(browser, 1280, 720)
    try:
        yield page
    finally:
        page.context.close()
