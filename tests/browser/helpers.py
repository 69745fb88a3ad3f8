"""What the browser tests and ``benchmarks/dashboard_live.py`` share: a fake webcam video built
from real photos, a Streamlit server on a free port, Debian's Chromium driven by Playwright, and
reading the page (the large verdict, the webrtc stream).

Chromium comes from Debian (``apt-get install -y chromium``), never from ``playwright install``.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.engine.inference import TrainedModel
from core.store.datasets import image_files, read_image
from core.store.tools import Tool

APP = Path(__file__).resolve().parents[2]
DATASETS = APP.parent / "shared" / "datasets"
CASTING = DATASETS / "casting" / "images"
ARTIFACTS = APP / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")

# Runs in every frame (the webrtc component is an iframe) before the page's own scripts: keeps
# the camera streams the page opens, so a test can unplug the camera (stop its tracks).
CAMERA_SPY = """
(() => {
  const media = navigator.mediaDevices;
  if (!media || !media.getUserMedia || window.__cameraStreams) return;
  window.__cameraStreams = [];
  const original = media.getUserMedia.bind(media);
  media.getUserMedia = async (constraints) => {
    const stream = await original(constraints);
    window.__cameraStreams.push(stream);
    return stream;
  };
})();
"""


class BrowserError(AssertionError):
    """The browser, the server or the page did not do what was expected."""


# ------------------------------------------------------------------ the fake webcam

def webrtc_round_trip(frame: np.ndarray) -> np.ndarray:
    """Roughly what the server sees of a frame after I420 and a video codec."""
    yuv = cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420)
    frame = cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR_I420)
    ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 60])
    return cv2.imdecode(jpeg, cv2.IMREAD_COLOR)


def write_y4m(path: Path, segments: list[tuple[list[np.ndarray], float]], fps: int) -> Path:
    """A YUV4MPEG2 (C420) video: each segment shows its frames in turn for its duration.

    Every frame of every segment has the same (even) size; Chromium plays the file in a loop
    as its fake webcam (``--use-file-for-fake-video-capture``)."""
    height, width = segments[0][0][0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420\n".encode())
        for frames, seconds in segments:
            count = int(round(seconds * fps))
            per_frame = max(1, count // len(frames))
            yuv = [cv2.cvtColor(fr, cv2.COLOR_BGR2YUV_I420).tobytes() for fr in frames]
            for i in range(count):
                f.write(b"FRAME\n")
                f.write(yuv[min(i // per_frame, len(yuv) - 1)])
    return path


def casting_photos(cls: str, start: int, stop: int) -> list[Path]:
    """Photos ``start:stop`` of a casting class (the shared datasets must be there)."""
    if not CASTING.is_dir():
        raise BrowserError(f"the shared datasets are missing: expected {CASTING}")
    return image_files(CASTING / cls)[start:stop]


def clear_photos(tool: Tool, view: Callable[[np.ndarray], np.ndarray], count: int = 3,
                 candidates: tuple[int, int] = (200, 300), margin: float = 0.2
                 ) -> dict[str, list[np.ndarray]]:
    """Per class ('good', 'defect'), ``count`` unseen casting photos the tool's model is sure
    about by at least ``margin`` once ``view`` (what the model will see of the photo: framing,
    codec round trip, ROI crop) is applied: a video of them gives steady verdicts."""
    model = TrainedModel(tool)
    threshold = tool.config.threshold
    picked = {}
    for cls in ("good", "defect"):
        photos = [read_image(p) for p in casting_photos(cls, *candidates)]
        scores = model.head.defect_scores(model.probabilities([view(im) for im in photos]))
        margins = (threshold - scores) if cls == "good" else (scores - threshold)
        order = np.argsort(-margins)
        picked[cls] = [photos[i] for i in order[:count] if margins[i] > margin]
        if len(picked[cls]) < count:
            raise BrowserError(f"no {count} clear '{cls}' photos for the video: margins "
                               f"{sorted(np.round(margins, 2))[-count:]}")
    return picked


# ------------------------------------------------------------------ server and browser

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_server(home: Path, log: Path, timeout_s: float = 60, address: str | None = None,
                     https: tuple[Path, Path] | None = None) -> Iterator[str]:
    """``streamlit run Home.py`` with INSPECTOR_HOME=home on a free port; yields its URL. With
    ``address`` it listens there instead of the configured loopback, with ``https`` (a
    certificate and its key) it serves HTTPS only."""
    port = free_port()
    env = {**os.environ, "INSPECTOR_HOME": str(home)}
    options = [*(["--server.address", address] if address else []),
               *(["--server.sslCertFile", str(https[0]), "--server.sslKeyFile", str(https[1])]
                 if https else [])]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "Home.py", "--server.port", str(port),
             "--server.headless", "true", "--browser.gatherUsageStats", "false", *options],
            cwd=APP, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"{'https' if https else 'http'}://127.0.0.1:{port}"
    trust = ssl.create_default_context(cafile=str(https[0])) if https else None
    try:
        deadline = time.time() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2, context=trust) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise BrowserError(f"streamlit did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def serving(home: Path, log: Path, **options) -> Iterator[str]:
    """``streamlit_server`` for a fixture: a server that does not start fails the test that
    needs it, with the server's log, instead of erroring in the fixture."""
    try:
        with streamlit_server(home, log, **options) as url:
            yield url
    except BrowserError as exc:
        pytest.fail(str(exc))


def within(seconds: float, check: Callable[[], object], what: str) -> object:
    """``check()``'s first true answer within ``seconds`` (polled), else a BrowserError naming ``what``."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.25)
    raise BrowserError(f"{what} did not happen within {seconds:.0f} s")


def launch_chromium(browser_type, video: Path, allow_camera: bool = True):
    """Debian's Chromium, headless, whose webcam plays ``video`` (a .y4m) in a loop; with
    ``allow_camera=False`` it refuses pages the camera, as a user answering 'Block' would."""
    return browser_type.launch(executable_path=str(CHROMIUM), headless=True, args=[
        "--no-sandbox", "--headless", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={video}", "--disable-background-networking",
        "--disable-component-update", *(["--use-fake-ui-for-media-stream"] if allow_camera else [])])


@contextmanager
def chromium(video: Path) -> Iterator[object]:
    """A Chromium that allows the camera (``launch_chromium``), closed at the end."""
    if not CHROMIUM.is_file():
        raise BrowserError("Debian chromium is required for the browser tests: "
                           "apt-get update && apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p.chromium, video)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser, width: int = 1280, height: int = 720):
    """A fresh browser context (own storage) at the kiosk's size, with the camera spy."""
    context = browser.new_context(viewport={"width": width, "height": height})
    context.add_init_script(CAMERA_SPY)
    return context.new_page()


# ------------------------------------------------------------------ reading the pages

def open_page(page, url: str, path: str, title: str, text: str | None = None) -> None:
    """Go to a page and wait until it has rendered (title, text, lazy elements, photos)."""
    page.goto(f"{url}/{path}")
    page.get_by_role("heading", name=title).first.wait_for(timeout=60_000)
    if text:
        page.get_by_text(text).first.wait_for(timeout=30_000)
    page.wait_for_function(  # lazily rendered elements (tables, forms) have arrived
        "() => !document.querySelector('[data-testid*=\"Skeleton\"]')", timeout=30_000)
    page.wait_for_timeout(1500)  # the rest of the script's output
    page.wait_for_function(  # photos have loaded
        "() => [...document.images].every(i => i.complete && i.naturalWidth > 0)",
        timeout=30_000)


def log_in(page, name: str, secret: str) -> None:
    """Fill the sidebar's login form and submit it (the page shows the outcome)."""
    page.get_by_role("textbox", name="User").fill(name)
    page.get_by_role("textbox", name="Password (operators: or PIN)").fill(secret)
    page.get_by_role("button", name="Log in").click()


def read_verdict(page) -> str:
    locator = page.locator("div.verdict")
    try:
        return locator.first.inner_text(timeout=2000).strip() if locator.count() else ""
    except Exception:  # noqa: BLE001 - replaced by a rerun between count() and inner_text()
        return ""


def wait_verdict(page, wanted: set[str], timeout_s: float) -> tuple[str, float]:
    """Poll the large verdict until it shows one of ``wanted``; return it and when."""
    deadline = time.time() + timeout_s
    seen = ""
    while time.time() < deadline:
        seen = read_verdict(page)
        if seen in wanted:
            return seen, time.time()
        time.sleep(0.2)
    raise BrowserError(f"the verdict never showed {wanted} in {timeout_s:.0f} s (last: {seen!r})")


def webrtc_frame(page, index: int = 0):
    """The frame of the index-th webrtc stream widget (one per camera)."""
    return page.frame_locator("iframe[title*='webrtc']").nth(index)


def press_stream_button(page, name: str, index: int = 0) -> None:
    """Click START or STOP under the index-th stream."""
    webrtc_frame(page, index).get_by_role("button", name=re.compile(f"^{name}$", re.I)).click()


def start_camera(page, index: int = 0) -> None:
    """Press START under a stream and wait until the processed video plays."""
    press_stream_button(page, "start", index)
    webrtc_frame(page, index).locator("video").first.wait_for(timeout=30_000)


def unplug_camera(page) -> int:
    """Stop every camera track the page's frames opened (like pulling the USB cable); returns
    how many tracks were stopped."""
    stopped = 0
    for frame in page.frames:
        stopped += frame.evaluate("""() => {
            let n = 0;
            for (const s of window.__cameraStreams || [])
                for (const t of s.getVideoTracks()) if (t.readyState === 'live') { t.stop(); n++; }
            return n;
        }""")
    return stopped


def stream_playing(page, index: int = 0) -> bool:
    """Whether the index-th stream widget shows a live, playing camera video."""
    try:
        return bool(webrtc_frame(page, index).locator("video").first.evaluate(
            "v => !v.paused && v.readyState >= 2 && !!v.srcObject && v.srcObject.active",
            timeout=5000))
    except Exception:  # noqa: BLE001 - no video element: the stream was stopped
        return False


def record_requests(context) -> list[str]:
    """Every URL the context's pages, frames and workers request from now on (appended live)."""
    seen: list[str] = []
    context.on("request", lambda request: seen.append(request.url))
    return seen


def leaving_the_machine(urls: list[str]) -> list[str]:
    """The URLs among ``urls`` whose host is not loopback (data: and blob: URLs never leave)."""
    from urllib.parse import urlparse

    loopback = {"127.0.0.1", "localhost", "::1", "[::1]"}
    return sorted({u for u in urls if urlparse(u).scheme in ("http", "https", "ws", "wss")
                   and urlparse(u).hostname not in loopback})
