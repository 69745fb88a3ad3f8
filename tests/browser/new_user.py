"""A new user's way from an empty station to parts judged on the line, in real Chromium: what
``tests/browser/test_new_user_line.py`` and ``benchmarks/dashboard_live.py`` share.

The fake webcam films casting parts on a grey conveyor at the camera's scale (the 300x300 photo
of a part at its size in a 640x480 frame, where it stops varying by a few pixels), one part
after another. Each frame carries the part's number in its top-left corner (``mark_code``: black
and white squares, outside the ROI around the part), which a probe in the page reads from the
camera stream itself (``CodeProbe``): the test knows which part the camera shows, and since when,
on the clock the station stamps its verdicts with (same machine).

The steps: create a tool on Home, draw its ROI on Capture (a box dragged on the camera picture,
then exact numbers), take a burst of photos of each class while the camera shows parts of that
class, train, run the version as a trial, promote it; then read the station's verdict on every
part from the history it writes (``judge_parts``).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.engine.preprocessing import crop_roi
from core.records.history import EventFilter, open_history
from core.store.datasets import read_image
from core.store.settings import load_settings
from core.store.tools import ROI
from tests.browser import helpers
from tests.browser.helpers import BrowserError, open_page
from tests.conftest import on_conveyor

HEIGHT, WIDTH = 480, 640  # the camera's frame
PART_BOX = (170, 90, 300, 300)  # x, y, width, height: where a part sits (its photo's square)
JITTER = 5  # px: how far from PART_BOX a part may stop, in x and in y
CODE_BITS, CODE_X, CODE_Y, CODE_SIDE, CODE_STEP = 7, 8, 8, 20, 26  # the part number's squares


def part_roi() -> ROI:
    x, y, w, h = PART_BOX
    return ROI.from_pixels(x, y, x + w, y + h, WIDTH, HEIGHT)


# ------------------------------------------------------------------ numbered parts on a conveyor

def mark_code(frame: np.ndarray, code: int) -> np.ndarray:
    """Write ``code`` (1..127) as CODE_BITS white (1) or black (0) squares in the corner."""
    if not 0 < code < 2 ** CODE_BITS:
        raise ValueError(f"code {code} does not fit in {CODE_BITS} bits")
    frame[CODE_Y - 4:CODE_Y + CODE_SIDE + 4, CODE_X - 4:CODE_X + CODE_STEP * CODE_BITS] = 60
    for bit in range(CODE_BITS):
        x = CODE_X + bit * CODE_STEP
        frame[CODE_Y:CODE_Y + CODE_SIDE, x:x + CODE_SIDE] = 255 if code >> bit & 1 else 0
    return frame


@dataclass(frozen=True)
class Part:
    """One part as the camera shows it, and the number its frame carries."""

    code: int
    cls: str  # 'good' or 'defect'
    path: Path  # the casting photo
    offset: tuple[int, int]  # where it stopped, from PART_BOX

    def scene(self) -> np.ndarray:
        """The part on the conveyor, as the camera sees it."""
        return on_conveyor(read_image(self.path), (HEIGHT, WIDTH), seed=self.code,
                           offset=self.offset)

    def frame(self) -> np.ndarray:
        """The camera's frame: the scene with the part's number in the corner."""
        return mark_code(self.scene(), self.code)

    def view(self) -> np.ndarray:
        """What the station judges of it: the ROI crop of the frame (before the video codec)."""
        return crop_roi(self.scene(), part_roi())


def parts(photos: list[tuple[str, Path]], first_code: int = 1, seed: int = 0) -> list[Part]:
    """Numbered parts in the given order, each stopping a few pixels off PART_BOX."""
    rng = np.random.default_rng(seed)
    return [Part(first_code + i, cls, path, tuple(int(v) for v in rng.integers(-JITTER, JITTER + 1, 2)))
            for i, (cls, path) in enumerate(photos)]


def part_video(path: Path, shown: list[Part], seconds: float, fps: int) -> Path:
    """A looping .y4m of the parts, each shown for ``seconds``."""
    return helpers.write_y4m(path, [([p.frame()], seconds) for p in shown], fps)


# ------------------------------------------------------------------ which part the camera shows

# In the webrtc component's frame: a hidden <video> of the camera stream; every frame's code is
# read from its squares, and each change logged with the frame's capture time (epoch ms).
CODE_PROBE = """([x, y, side, step, bits]) => {
  const stream = (window.__cameraStreams || []).at(-1);
  if (!stream) return false;
  if (window.__codes && window.__codes.stream === stream.id) return true;
  const cam = document.createElement('video');
  cam.muted = true; cam.playsInline = true; cam.srcObject = stream;
  cam.style = 'position:fixed;left:0;top:0;width:64px;height:48px;opacity:0.01';
  document.body.appendChild(cam);
  cam.play();
  const width = step * (bits - 1) + side;
  const canvas = document.createElement('canvas');
  canvas.width = width; canvas.height = side;
  const g = canvas.getContext('2d', {willReadFrequently: true});
  const probe = window.__codes = {stream: stream.id, log: [], current: null};
  const onCam = (now, meta) => {
    g.drawImage(cam, x, y, width, side, 0, 0, width, side);
    const d = g.getImageData(0, 0, width, side).data;
    let code = 0;
    for (let b = 0; b < bits; b++) {
      const cx = b * step + (side >> 1), cy = side >> 1;
      let sum = 0, n = 0;
      for (let dy = -3; dy <= 3; dy++)
        for (let dx = -3; dx <= 3; dx++) { sum += d[((cy + dy) * width + cx + dx) * 4]; n++; }
      if (sum / n > 128) code |= 1 << b;
    }
    if (code !== probe.current) {
      probe.log.push({t: performance.timeOrigin + (meta.captureTime ?? now), code});
      probe.current = code;
    }
    cam.requestVideoFrameCallback(onCam);
  };
  cam.requestVideoFrameCallback(onCam);
  return true;
}"""


class CodeProbe:
    """Reads the part numbers of a page's camera stream (installed after START)."""

    def __init__(self, page):
        self.page = page
        self.frame = None
        self.install()

    def install(self) -> None:
        args = [CODE_X, CODE_Y, CODE_SIDE, CODE_STEP, CODE_BITS]
        deadline = time.time() + 20
        while time.time() < deadline:
            for frame in self.page.frames:
                try:
                    if frame.evaluate("() => !!window.__cameraStreams?.length") and \
                            frame.evaluate(CODE_PROBE, args):
                        self.frame = frame
                        return
                except Exception:  # noqa: BLE001 - a frame detached meanwhile
                    continue
            time.sleep(0.5)
        raise BrowserError("no camera stream in the page's frames to read the part numbers from")

    def state(self) -> dict:
        """{'current': code, 'log': [{'t': epoch ms, 'code': c}, ...]}; re-installed if the
        stream's frame was replaced."""
        for _ in range(2):
            try:
                found = self.frame.evaluate("() => window.__codes")
                if found:
                    return found
            except Exception:  # noqa: BLE001 - the component's frame was remounted
                pass
            self.install()
        raise BrowserError("the part-number probe is gone")

    def wait_for(self, codes: set[int], timeout_s: float) -> tuple[int, float]:
        """Wait until the camera turns to one of ``codes``; return it and when (epoch s)."""
        seen = len(self.state()["log"])
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            log = self.state()["log"]
            for entry in log[seen:]:
                if entry["code"] in codes:
                    return entry["code"], entry["t"] / 1000
            seen = len(log)
            time.sleep(0.1)
        raise BrowserError(f"the camera never turned to one of parts {sorted(codes)} in "
                           f"{timeout_s:.0f} s (now: {self.state()['current']})")

    def windows(self, since: float) -> list[tuple[int, float, float]]:
        """(code, start, end) of every part shown entirely after ``since`` (epoch s)."""
        log = self.state()["log"]
        return [(a["code"], a["t"] / 1000, b["t"] / 1000) for a, b in zip(log, log[1:])
                if a["t"] / 1000 >= since]


# ------------------------------------------------------------------ the new user's steps

def create_tool(page, url: str, name: str, mirrored: bool = True) -> None:
    """Home: create a classifier with the default classes (and flips, for round parts)."""
    open_page(page, url, "", "Shopfloor Inspector")
    page.get_by_label("Tool name").fill(name)
    if mirrored:
        page.get_by_text("Parts look the same mirrored").click()
    page.get_by_role("button", name="Create tool").click()
    page.get_by_text(f"Created tool '{name}'").wait_for(timeout=20_000)


def set_roi(page, box: tuple[int, int, int, int] = PART_BOX) -> None:
    """Capture, camera started: drag a box around the part on the picture, fine-tune it with
    the numbers, save it."""
    canvas = page.locator("canvas.upper-canvas").first
    canvas.wait_for(timeout=30_000)
    x, y, w, h = box
    shown = canvas.bounding_box()
    scale = shown["width"] / WIDTH
    page.mouse.move(shown["x"] + x * scale, shown["y"] + y * scale)
    page.mouse.down()
    page.mouse.move(shown["x"] + (x + w) * scale, shown["y"] + (y + h) * scale, steps=8)
    page.mouse.up()
    page.get_by_text("Not saved yet").wait_for(timeout=15_000)
    for label, value in zip(("x (px)", "y (px)", "width (px)", "height (px)"), box):
        field = page.get_by_label(label)
        if field.input_value() != str(value):
            field.fill(str(value))
            field.press("Enter")
            page.wait_for_timeout(800)
    page.get_by_role("button", name="Save ROI").click()
    page.get_by_text(f"saved: {w}x{h} px at x {x}, y {y}").wait_for(timeout=15_000)


def capture_segments(page, probe: CodeProbe, starts: dict[str, int], count: int,
                     interval_s: float, lead_s: float = 0.4) -> dict[str, float]:
    """Capture, ROI saved: a burst of ``count`` photos, ``interval_s`` apart, of each class while
    the camera shows that class's parts (``starts``: class -> the number of its first part).
    Each burst starts ``lead_s`` after the camera turns to that first part. Returns when each
    burst was clicked (epoch s)."""
    page.get_by_text("2 · Take photos").click()
    page.get_by_role("button", name="Settings").click()
    for label, value in (("Photos per burst", str(count)), ("Seconds between photos", str(interval_s))):
        field = page.get_by_label(label)
        field.fill(value)
        field.press("Enter")
        page.wait_for_timeout(800)
    page.keyboard.press("Escape")
    burst = page.get_by_role("button", name=f"Burst of {count}")
    burst.wait_for(timeout=15_000)
    clicked = {}
    order = sorted(starts, key=starts.get)
    while len(clicked) < len(starts):
        current = probe.state()["current"] or 0
        upcoming = [c for c in order if c not in clicked]
        # the class whose first part comes next after the one on the camera now
        cls = min(upcoming, key=lambda c: (starts[c] <= current, starts[c]))
        page.get_by_role("radiogroup", name="Save into class").get_by_text(cls, exact=True).click()
        page.wait_for_timeout(1000)
        _, at = probe.wait_for({starts[cls]}, timeout_s=180)
        time.sleep(max(0.0, at + lead_s - time.time()))
        clicked[cls] = time.time()
        burst.click()
        page.get_by_text(re.compile(rf"Saved {count} photo\(s\) into '{cls}' at")).wait_for(
            timeout=(count * interval_s + 60) * 1000)
    return clicked


def train(page, url: str, timeout_s: float = 600) -> float:
    """Training: Start training (the tool's profile) and wait for the run; its seconds."""
    open_page(page, url, "Training", "Training")
    start = page.get_by_role("button", name="Start training")
    start.wait_for(timeout=60_000)
    t0 = time.time()
    start.click()
    page.get_by_text(re.compile(r"^Trained v")).first.wait_for(timeout=timeout_s * 1000)
    return time.time() - t0


def run_as_trial(page) -> str:
    """Training, a version trained: run it as a trial on the line; its id."""
    button = page.get_by_role("button", name=re.compile(r"^Run v\S+ as trial on the line"))
    version = button.inner_text().split()[1]
    button.click()
    page.get_by_text(re.compile(r"runs as a trial")).first.wait_for(timeout=30_000)
    return version


def promote(page) -> None:
    """Training, a trial running: promote it (a first version joins the line)."""
    page.get_by_role("button", name=re.compile(r"^Promote ")).click()
    page.get_by_text("is the active model").first.wait_for(timeout=30_000)


# ------------------------------------------------------------------ what the station recorded

@dataclass(frozen=True)
class PartVerdict:
    part: Part
    start: float  # when the camera turned to it (epoch s)
    end: float  # when it turned to the next part
    verdicts: tuple[str, ...]  # the station's verdicts while it was settled on the camera
    scores: tuple[float, ...]  # the smoothed scores of those verdicts' events
    follow_s: float | None  # from the part's arrival to the station's first event for it

    @property
    def right(self) -> bool:
        wanted = "PASS" if self.part.cls == "good" else "FAIL"
        return bool(self.verdicts) and all(v == wanted for v in self.verdicts)


def judge_parts(home: Path, tool: str, probe: CodeProbe, shown: list[Part], part_s: float,
                settle_s: float) -> list[PartVerdict]:
    """The station's verdict on each part in one loop of the video, read from the history it
    writes. In continuous mode the station records a tool's verdict when it changes (and a
    heartbeat), so its verdict at any moment is that of its latest event: a part is judged
    right when every verdict in force from ``settle_s`` after it arrived until the next part
    (the smoothing window and the stream's delay) is the right one."""
    since = time.time() + 0.5
    by_code = {p.code: p for p in shown}
    deadline = since + part_s * (len(shown) + 3) + 30
    while True:
        windows = {code: (start, end) for code, start, end in probe.windows(since)}
        if set(by_code) <= set(windows):
            break
        if time.time() > deadline:
            missing = sorted(set(by_code) - set(windows))
            raise BrowserError(f"parts {missing} were not shown within a loop of the video")
        time.sleep(0.5)
    time.sleep(2.0)  # the history writer's queue
    history = open_history(load_settings(home), home)
    events = history.events(EventFilter(tools=(tool,)), limit=None, newest_first=False)
    times = np.array([t.timestamp() for t in events["time"]])
    verdicts, scores = list(events["verdict"]), list(events["score"])
    found = []
    for code, part in by_code.items():
        start, end = windows[code]
        settled = start + settle_s
        before = np.flatnonzero(times <= settled)
        inside = np.flatnonzero((times > settled) & (times < end))
        rows = ([before[-1]] if len(before) else []) + list(inside)
        after = np.flatnonzero((times > start) & (times < end))
        found.append(PartVerdict(part, start, end, tuple(verdicts[i] for i in rows),
                                 tuple(round(float(scores[i]), 3) for i in rows),
                                 float(times[after[0]] - start) if len(after) else None))
    return sorted(found, key=lambda v: v.start)
