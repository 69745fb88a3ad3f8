"""The dashboard in a real browser: every page renders, and live inspection of a fake webcam
(a video of real casting photos: good parts, then defective ones) shows PASS, then FAIL."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PAGES = {  # url path -> (the page's title, a text the page shows for the trained tool)
    "": ("Shopfloor Inspector", "Next steps"), "Capture": ("Capture", "Save into class"),
    "Labeling": ("Labeling", "Move selected to"), "Training": ("Training", "Model versions"),
    "History": ("History", "arrives with the history feature")}


def open_page(page, server, path: str, title: str, text: str | None = None) -> None:
    page.goto(f"{server['url']}/{path}")
    page.get_by_role("heading", name=title).first.wait_for(timeout=60_000)
    if text:
        page.get_by_text(text).first.wait_for(timeout=30_000)
    page.wait_for_function(  # lazily rendered elements (tables, forms) have arrived
        "() => !document.querySelector('[data-testid*=\"Skeleton\"]')", timeout=30_000)
    page.wait_for_timeout(1500)  # the rest of the script's output
    page.wait_for_function(  # photos have loaded
        "() => [...document.images].every(i => i.complete && i.naturalWidth > 0)",
        timeout=30_000)


@pytest.mark.parametrize("path", list(PAGES))
def test_page_renders(page, server, path):
    open_page(page, server, path, *PAGES[path])
    page.screenshot(path=str(ARTIFACTS / f"page-{(path or 'home').lower()}.png"), full_page=True)
    assert page.locator("[data-testid='stException']").count() == 0


def read_verdict(page) -> str:
    locator = page.locator("div.verdict")
    return locator.first.inner_text().strip() if locator.count() else ""


def wait_verdict(page, wanted: set[str], timeout_s: float) -> tuple[str, float]:
    """Poll the large verdict until it shows one of ``wanted``; return it and when."""
    deadline = time.time() + timeout_s
    seen = ""
    while time.time() < deadline:
        seen = read_verdict(page)
        if seen in wanted:
            return seen, time.time()
        time.sleep(0.2)
    raise AssertionError(f"the verdict never showed {wanted} in {timeout_s:.0f} s (last: {seen!r})")


def test_live_inspection_passes_good_parts_and_fails_defective_ones(page, server, station):
    segment_s = station["segment_s"]
    open_page(page, server, "Live_inspection", "Live inspection")
    assert read_verdict(page) == "START CAMERA"
    frame = page.frame_locator("iframe[title*='webrtc']").first
    frame.get_by_role("button", name=re.compile("^start$", re.I)).click()
    frame.locator("video").first.wait_for(timeout=30_000)

    # the video starts with good parts: the first verdict must be PASS
    verdict, t_pass = wait_verdict(page, {"PASS", "FAIL"}, 60)
    page.screenshot(path=str(ARTIFACTS / "live-pass.png"))
    assert verdict == "PASS", "a good part was judged FAIL"
    # then the defective parts come into view
    _, t_fail = wait_verdict(page, {"FAIL"}, segment_s + 30)
    page.screenshot(path=str(ARTIFACTS / "live-fail.png"))
    assert read_verdict(page) == "FAIL"
    # and the video loops back to good parts
    wait_verdict(page, {"PASS"}, segment_s + 30)
    page.screenshot(path=str(ARTIFACTS / "live-pass-again.png"))

    details = page.get_by_text(re.compile(r"casting.*threshold")).first.inner_text()
    assert "score" in details

    # the in-memory history has recorded the verdict changes
    open_page(page, server, "History", "History", "verdict(s) in memory")
    page.screenshot(path=str(ARTIFACTS / "page-history-after-live.png"))
    summary = page.get_by_text("verdict(s) in memory").first.inner_text()
    passes, fails = map(int, re.search(r"(\d+) PASS, (\d+) FAIL", summary).groups())
    assert passes >= 2 and fails >= 1, summary
