"""A real station for browser tests: a trained tool, a fake webcam video, Streamlit and Chromium.

Chromium comes from Debian (``apt-get install -y chromium``), never from ``playwright install``;
the test fails with that instruction when /usr/bin/chromium is missing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.datasets import ToolDataset, image_files, read_image
from core.inference import TrainedModel
from core.tools import ToolStore
from core.training import TrainingOptions, train_tool

APP = Path(__file__).resolve().parents[2]
DATASETS = APP.parent / "shared" / "datasets"
ARTIFACTS = APP / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
FRAME = 320  # the fake webcam's frame size (square, like the casting photos)
FPS = 10
SEGMENT_S = 12  # seconds of good parts, then of defective parts, then the video loops
TRAIN_PER_CLASS = 10


def _webrtc_round_trip(image: np.ndarray) -> np.ndarray:
    """Roughly what the model sees after I420 and a video codec: used to pick clear frames."""
    frame = cv2.resize(image, (FRAME, FRAME), interpolation=cv2.INTER_AREA)
    yuv = cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420)
    frame = cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR_I420)
    ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 60])
    return cv2.imdecode(jpeg, cv2.IMREAD_COLOR)


def write_y4m(path: Path, segments: list[tuple[list[np.ndarray], float]]) -> Path:
    """A YUV4MPEG2 (C420) video: each segment shows its images in turn for its duration."""
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{FRAME} H{FRAME} F{FPS}:1 Ip A1:1 C420\n".encode())
        for images, seconds in segments:
            frames = int(seconds * FPS)
            per_image = max(1, frames // len(images))
            for i in range(frames):
                image = images[min(i // per_image, len(images) - 1)]
                frame = cv2.resize(image, (FRAME, FRAME), interpolation=cv2.INTER_AREA)
                f.write(b"FRAME\n")
                f.write(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    return path


@pytest.fixture(scope="session")
def station(tmp_path_factory) -> dict:
    """A workspace with tool 'casting' trained on 10 + 10 real photos, and the fake webcam
    video: clearly good parts for SEGMENT_S seconds, then clearly defective ones."""
    root = DATASETS / "casting" / "images"
    if not root.is_dir():
        pytest.fail(f"the shared datasets are missing: expected {root}")
    home = tmp_path_factory.mktemp("browser_station")
    cache = APP / "models" / "cache"
    if cache.is_dir():
        shutil.copytree(cache, home / "cache")
    tool = ToolStore(home).create("casting", allow_flips=True, smoothing=3)
    ds = ToolDataset(tool.images_dir, tool.config.classes)
    for cls in ("good", "defect"):
        for path in image_files(root / cls)[:TRAIN_PER_CLASS]:
            ds.add_file(cls, path.read_bytes(), path.name)
    train_tool(tool, options=TrainingOptions(views_per_image=2, folds=3))
    tool = ToolStore(home).get("casting")

    # the video shows unseen photos the model is clearly sure about, after a codec round trip
    model = TrainedModel(tool)
    threshold = tool.config.threshold
    picked = {}
    for cls in ("good", "defect"):
        candidates = [read_image(p) for p in image_files(root / cls)[200:300]]
        trips = [_webrtc_round_trip(im) for im in candidates]
        scores = model.head.defect_scores(model.probabilities(trips))
        margin = (threshold - scores) if cls == "good" else (scores - threshold)
        order = np.argsort(-margin)
        picked[cls] = [candidates[i] for i in order[:3] if margin[i] > 0.2]
        assert len(picked[cls]) == 3, f"no clear '{cls}' frames for the video: {sorted(margin)}"
    video = write_y4m(home / "webcam.y4m", [(picked["good"], SEGMENT_S),
                                            (picked["defect"], SEGMENT_S)])
    return {"home": home, "video": video, "threshold": threshold, "segment_s": SEGMENT_S}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(station, tmp_path_factory):
    """``streamlit run Home.py`` on a free port, with INSPECTOR_HOME set to the station."""
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "streamlit.log"
    env = {**os.environ, "INSPECTOR_HOME": str(station["home"])}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "Home.py", "--server.port", str(port),
             "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=APP, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"streamlit did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield {"url": url, "log": log}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def browser(station):
    if not CHROMIUM.is_file():
        pytest.fail("Debian chromium is required for the browser tests: "
                    "apt-get update && apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
            "--no-sandbox", "--headless", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={station['video']}",
            "--disable-background-networking", "--disable-component-update"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, server):
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()
