"""Time to train a tool from 2 x 30 photos, validation estimate included, per profile.

"Cold" is the first training on a fresh station (it also converts the backbone to ONNX once);
"warm" is every later one. Real casting photos taken in their 8 orientations (``allow_flips``, the
most views training takes), 5-fold cross-validation.

    python benchmarks/training_time.py [--profiles fast balanced accurate]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.common import machine, pass_fail_files, use_scratch_workspace, write_section
from core.engine.training import train_tool
from core.store.datasets import LoadedImages, read_image
from core.store.tools import ToolStore

TARGET_S = {"fast": 60, "accurate": 180}


def sample(k: int, seed: int) -> LoadedImages:
    files, is_defect = pass_fail_files("casting")
    rng = np.random.default_rng(seed)
    drawn = np.concatenate([rng.choice(np.flatnonzero(is_defect == s), k, replace=False)
                            for s in (False, True)])
    return LoadedImages([read_image(files[i]) for i in drawn], [int(is_defect[i]) for i in drawn],
                        [files[i] for i in drawn])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", default=["fast", "balanced", "accurate"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    use_scratch_workspace()
    store = ToolStore()
    rows = []
    for profile in args.profiles:
        times = []
        for repeat in range(args.repeats + 1):
            data = sample(30, seed=repeat)
            tool = store.create(f"{profile}-{repeat}", profile=profile, allow_flips=True)
            started = time.perf_counter()
            train_tool(tool, data)
            times.append(time.perf_counter() - started)
        warm = times[1:]
        target = f"<= {TARGET_S[profile]} s" if profile in TARGET_S else "-"
        rows.append(f"| {profile} | {times[0]:.1f} | {np.median(warm):.1f} | {max(warm):.1f} | {target} |")
        print(rows[-1], flush=True)
    body = "\n".join([
        "## Training time, 2 x 30 images",
        "",
        f"Machine: {machine()}. From the call to a saved, validated model version "
        "(feature extraction of 8 orientations per image, 5-fold cross-validation of the global and "
        "local parts of the head, final head, heatmap calibration, save).",
        "",
        "| profile | cold start (s) | warm median (s) | warm max (s) | target |",
        "|---|---|---|---|---|",
        *rows,
    ])
    write_section("training-time", body)


if __name__ == "__main__":
    main()
