"""A new user, from an empty station to unseen parts judged on the line, in Chromium at 1280x720.

The fake webcam films casting parts on a grey conveyor (``tests/browser/new_user.py``). At the
camera by the engineer's browser: create a tool on Home, draw its ROI on Capture around where
the part sits, take a burst of 20 photos while good parts pass and one while defective parts
pass, train (profile fast), run the version as a trial. At the line (the operator's browser,
whose camera shows other parts, never photographed): Live inspection with the trial's verdicts,
promote it from Training, then read what the station recorded for each part from its history.

Two things are checked. The line keeps what the model knows: every part the model judges clearly
(its score without the camera, the codec and the stream at least ``CLEAR_MARGIN`` from the
threshold) gets that same verdict on the line; this is where framing, ROI, codec or smoothing
faults show. And the model from 20 + 20 camera photos is good: at least ``FLOOR`` of the unseen
parts judged right. The issue's 95 % is a benchmark figure (``benchmarks/dashboard_live.py``,
30 + 30 photos, 80 parts), not this test's: offline, 20 + 20 burst photos of these parts judge
91-93 % of 80 unseen ones right (false FAILs 3-6 of 40 good parts over four choices of the
photos), so a 95 % bar on 20 parts failed one run in a few without any fault of the line.

A failure says where the verdicts went wrong: per part its verdicts and scores on the line, the
model's score on the same part without the video codec (``offline``), the photos' size, the
framing notices Live inspection showed; ``test-artifacts/new-user-line.json`` keeps them.
"""

from __future__ import annotations

import json
import re
import shutil
import time

import cv2
import numpy as np
import pytest

from core.engine.inference import TrainedModel
from core.store.datasets import ToolDataset, read_image
from core.store.tools import ToolStore
from tests.browser import helpers
from tests.browser.helpers import APP, ARTIFACTS, BrowserError, new_page, open_page, start_camera
from tests.browser.new_user import (
    CodeProbe,
    capture_segments,
    create_tool,
    judge_parts,
    part_roi,
    part_video,
    parts,
    promote,
    run_as_trial,
    set_roi,
    train,
)

pytestmark = pytest.mark.slow

TOOL = "impeller"
CAPTURED_PARTS = 24  # per class on the camera while capturing, one a second
CAPTURE_S, CAPTURE_FPS = 1.0, 5
PHOTOS_PER_CLASS, BURST_INTERVAL_S = 20, 1.0
UNSEEN_PER_CLASS = 15  # per class on the line's camera, never photographed
PART_S, LINE_FPS = 2.5, 10
SETTLE_S = 1.2  # from a part's arrival: the smoothing window (5 frames) and the stream's delay
FLOOR = 0.8  # of the unseen parts judged right
CLEAR_MARGIN = 0.2  # offline score this far from the threshold: the line must agree


@pytest.fixture(scope="module")
def line(tmp_path_factory, playwright_session):
    """An empty station, its server, and two Chromiums: the engineer's at a camera filming parts
    to photograph, the operator's at the line's camera filming other parts."""
    home = tmp_path_factory.mktemp("new_user")
    cache = APP / "models" / "cache"
    if cache.is_dir():  # the backbone's ONNX graph, as on any station after its first training
        shutil.copytree(cache, home / "cache")
    try:
        photographed = parts([(c, p) for c in ("good", "defect")
                              for p in helpers.casting_photos(c, 0, CAPTURED_PARTS)], seed=1)
        unseen = [(c, p) for c in ("good", "defect")
                  for p in helpers.casting_photos(c, 300, 300 + UNSEEN_PER_CLASS)]
        order = np.random.default_rng(7).permutation(len(unseen))
        unseen = parts([unseen[i] for i in order], seed=2)
    except BrowserError as exc:
        pytest.fail(str(exc))
    videos = home / "videos"
    videos.mkdir()
    camera = part_video(videos / "capture.y4m", photographed, CAPTURE_S, CAPTURE_FPS)
    line_camera = part_video(videos / "line.y4m", unseen, PART_S, LINE_FPS)
    engineer = helpers.launch_chromium(playwright_session.chromium, camera)
    operator = helpers.launch_chromium(playwright_session.chromium, line_camera)
    try:
        with helpers.serving(home, home / "streamlit.log") as url:
            yield {"home": home, "url": url, "engineer": engineer, "operator": operator,
                   "photographed": photographed, "unseen": unseen}
    finally:
        engineer.close()
        operator.close()


def small(image: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)


def photographed_parts(ds: ToolDataset, shown) -> dict[str, list]:
    """Per class folder, which parts its photos show (the nearest part in pixels)."""
    views = [(p, small(p.view())) for p in shown]
    found = {}
    for path in ds.files():
        photo = small(read_image(path))
        part = min(views, key=lambda v: float(np.abs(v[1] - photo).mean()))[0]
        found.setdefault(path.parent.name, []).append(part)
    return found


def test_a_new_user_gets_unseen_parts_judged_right_on_the_line(line):
    ARTIFACTS.mkdir(exist_ok=True)
    home, url = line["home"], line["url"]
    started = time.time()
    timings, framing = {}, []
    engineer = new_page(line["engineer"], 1280, 720)
    operator = new_page(line["operator"], 1280, 720)
    try:
        create_tool(engineer, url, TOOL)
        open_page(engineer, url, "Capture", "Capture", "Press START under the video")
        start_camera(engineer)
        set_roi(engineer)
        assert ToolStore(home).get(TOOL).config.roi == part_roi()
        first = {"good": 1, "defect": 1 + CAPTURED_PARTS}
        capture_segments(engineer, CodeProbe(engineer), first, PHOTOS_PER_CLASS, BURST_INTERVAL_S)
        engineer.screenshot(path=str(ARTIFACTS / "new-user-capture.png"))
        timings["capture_done_s"] = time.time() - started

        tool = ToolStore(home).get(TOOL)
        ds = ToolDataset(tool.images_dir, tool.config.classes)
        assert ds.counts() == {"good": PHOTOS_PER_CLASS, "defect": PHOTOS_PER_CLASS}
        sizes = sorted({read_image(p).shape[:2] for p in ds.files()})
        assert sizes == [(300, 300)], f"the photos are not the 300x300 ROI crop: {sizes}"
        shown = photographed_parts(ds, line["photographed"])
        mislabelled = {c: [p.path.name for p in found if p.cls != c] for c, found in shown.items()}
        assert not any(mislabelled.values()), f"a burst ran into the other class: {mislabelled}"

        timings["training_s"] = train(engineer, url)
        version = run_as_trial(engineer)
        open_page(operator, url, "Live_inspection", "Live inspection")
        start_camera(operator)
        operator.get_by_text(re.compile(rf"TRIAL {TOOL} {version} (PASS|FAIL)")).first.wait_for(
            timeout=60_000)
        promote(engineer)
        operator.get_by_text(re.compile(rf"^{TOOL} (PASS|FAIL)")).first.wait_for(timeout=30_000)
        timings["on_the_line_s"] = time.time() - started

        judged = judge_parts(home, TOOL, CodeProbe(operator), line["unseen"], PART_S, SETTLE_S)
        framing = sorted({w.inner_text() for w in operator.locator("[data-testid='stAlert']").all()
                          if ", framing:" in w.inner_text()})
        operator.screenshot(path=str(ARTIFACTS / "new-user-live.png"))
        timings["total_s"] = time.time() - started
    except BrowserError as exc:
        pytest.fail(str(exc))
    finally:
        engineer.context.close()
        operator.context.close()

    tool = ToolStore(home).get(TOOL)
    model = TrainedModel(tool)
    views = [v.part.view() for v in judged]
    offline = model.head.defect_scores(model.probabilities(views))
    meta = tool.version_meta()
    rows = [{"code": v.part.code, "photo": v.part.path.name, "class": v.part.cls,
             "right": v.right, "verdicts": list(v.verdicts), "scores": list(v.scores),
             "offline_score": round(float(s), 3), "follow_s": v.follow_s}
            for v, s in zip(judged, offline)]
    right = sum(v.right for v in judged)
    report = {"right": right, "total": len(judged), "threshold": tool.config.threshold,
              "validation": {"balanced_accuracy": meta.validation.balanced_accuracy,
                             "method": meta.validation.method},
              "photos": {c: sorted({p.path.name for p in found}) for c, found in shown.items()},
              "framing": framing, "timings": {k: round(v, 1) for k, v in timings.items()},
              "parts": rows}
    (ARTIFACTS / "new-user-line.json").write_text(json.dumps(report, indent=1))
    wrong = [r for r in rows if not r["right"]]
    threshold = tool.config.threshold
    lost = [r for r in rows if abs(r["offline_score"] - threshold) >= CLEAR_MARGIN
            and r["right"] != ((r["offline_score"] >= threshold) == (r["class"] == "defect"))]
    assert not lost, (
        f"the line judged {len(lost)} part(s) otherwise than the model does without the camera "
        f"(threshold {threshold:.2f}): {lost}; framing notices: {framing}")
    assert right / len(judged) >= FLOOR, (
        f"{right}/{len(judged)} unseen parts judged right on the line (threshold "
        f"{threshold:.2f}); wrong: {wrong}; framing notices: {framing}; "
        f"validation {report['validation']}")
