"""Per-frame latency of live inspection at 640x480: what the webcam callback spends per frame.

Each mode runs a real trained tool on a 640x480 frame holding a real casting photo, timing
``Inspector.inspect`` plus drawing the overlay (when there is one), after a warm-up.

    python benchmarks/live_latency.py [--profiles fast] [--frames 300]
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from benchmarks.common import machine, pass_fail_files, use_scratch_workspace, write_section
from benchmarks.training_time import sample
from core.engine.inference import Inspector, ToolRunner
from core.engine.training import TrainingOptions, train_tool
from core.store.datasets import read_image
from core.store.tools import ROI, ToolStore, TTASettings

TARGETS = {"classify + Grad-CAM overlay": 20, "3 tools + Grad-CAM overlay": 50,
           "TTA 4 variants + Grad-CAM overlay": 60}


def timed(inspector: Inspector, frame: np.ndarray, frames: int, heatmaps: bool) -> np.ndarray:
    times = []
    for i in range(frames + 20):
        started = time.perf_counter()
        results = inspector.inspect(frame, heatmaps=heatmaps)
        if heatmaps:
            Inspector.draw(frame, results)
        if i >= 20:
            times.append((time.perf_counter() - started) * 1000)
    return np.array(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", default=["fast", "balanced", "accurate"])
    parser.add_argument("--frames", type=int, default=300)
    args = parser.parse_args()
    use_scratch_workspace()
    store = ToolStore()
    files, is_defect = pass_fail_files("casting")
    frame = np.full((480, 640, 3), 90, np.uint8)
    frame[80:400, 160:480] = cv2.resize(read_image(files[int(np.flatnonzero(is_defect)[0])]), (320, 320))
    rows = []
    for profile in args.profiles:
        tool = store.create(f"latency-{profile}", profile=profile)
        train_tool(tool, sample(10, seed=0), TrainingOptions(views_per_image=1))
        tool.update(roi=ROI.from_pixels(160, 80, 480, 400, 640, 480))
        one = ToolRunner(store.get(tool.name))
        tta = ToolRunner(store.get(tool.name))
        tta.configure(tta=TTASettings(True, ("hflip", "brighter", "darker")))
        three = [ToolRunner(store.get(tool.name)) for _ in range(3)]
        for i, runner in enumerate(three):
            runner.configure(roi=ROI(i / 3, 0.2, 1 / 3, 0.6))
        modes = [("classify only", [one], False), ("classify + Grad-CAM overlay", [one], True),
                 ("TTA 4 variants + Grad-CAM overlay", [tta], True),
                 ("3 tools + Grad-CAM overlay", three, True)]
        for mode, runners, heatmaps in modes:
            t = timed(Inspector(runners), frame, args.frames, heatmaps)
            target = f"<= {TARGETS[mode]}" if profile == "fast" and mode in TARGETS else "-"
            rows.append(f"| {profile} | {mode} | {np.percentile(t, 50):.1f} | "
                        f"{np.percentile(t, 95):.1f} | {target} |")
            print(rows[-1], flush=True)
    write_section("live-latency", "\n".join([
        "## Live frame latency, 640x480, one ROI",
        "",
        f"Machine: {machine()}. {args.frames} frames per mode after 20 warm-up frames; time of "
        "`Inspector.inspect` (ROI crop, resize, backbone, head, smoothing, Grad-CAM) plus drawing "
        "the overlay when Grad-CAM is on. The camera delivers a frame every 33 ms.",
        "",
        "| profile | mode | p50 (ms) | p95 (ms) | target p95 (ms) |",
        "|---|---|---|---|---|",
        *rows,
    ]))


if __name__ == "__main__":
    main()
