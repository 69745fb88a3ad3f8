"""Anomaly tools: accuracy from k good photos, training time, live latency with the map, size on disk.

Accuracy follows the anomaly protocol of the datasets README on all eight sets: draw k good photos
(k = 10, 30; seeds 0-2), train an anomaly tool on them with the product's own training, then score
every image not drawn (on the sets marked * in the README, a random 150 good + 150 defect of them
per seed): image ROC AUC, pixel ROC AUC where masks exist (good images count as all-normal
pixels), and the good PASS and defect FAIL rates at the good-only threshold (score 0.5). Each
image's maps are computed once per set and input shape and scored by each tool, which is exactly
what the live engine computes for that image.

    python -m benchmarks.anomaly [--only accuracy|timing|report] [--ks 10 30] [--seeds 0 1 2] [--sets ...]

``--only report`` rewrites the BENCHMARKS.md section from the stored results.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
from sklearn.metrics import roc_auc_score

from benchmarks.common import (ANOMALY_BASELINE, ANOMALY_SUBSAMPLED, DATASETS, SETS, TUNED, halves_summary,
                               held_out_rows, machine, pass_fail_files, use_scratch_workspace,
                               write_section)
from core.engine.anomaly import AnomalyModel, AnomalySettings
from core.engine.inference import Inspector, ToolRunner
from core.engine.preprocessing import InputShape
from core.engine.runtime import FeatureMaps
from core.engine.training import TrainingOptions, anomaly_maps_of, train_tool
from core.store.datasets import LoadedImages, read_image
from core.store.tools import ROI, ToolStore

RESULTS = Path(__file__).parent / "results" / "anomaly.json"
PIXEL_STEP = 4  # pixel ROC AUC on every 4th pixel of each axis, plenty for a stable figure


def masks_of(dataset: str, files: list[Path], is_defect: np.ndarray) -> list[np.ndarray] | None:
    """Each image's defect mask (all False for good images), or None when the set has no masks."""
    root = DATASETS / dataset / "masks"
    if not root.is_dir():
        return None
    masks = []
    for path, defect in zip(files, is_defect):
        mask = cv2.imread(str(root / path.parent.name / f"{path.stem}.png"), cv2.IMREAD_GRAYSCALE) \
            if defect else None
        if defect and mask is None:
            return None
        masks.append(mask > 127 if defect else None)
    return masks


def pixel_auroc(maps: np.ndarray, shapes: list[tuple[int, int]], masks: list[np.ndarray | None]) -> float:
    scores, truth = [], []
    for anomaly_map, (h, w), mask in zip(maps, shapes, masks):
        up = cv2.resize(anomaly_map, (w, h), interpolation=cv2.INTER_LINEAR)[::PIXEL_STEP, ::PIXEL_STEP]
        scores.append(up.ravel())
        mask = mask if mask is not None else np.zeros((h, w), bool)
        truth.append(mask[::PIXEL_STEP, ::PIXEL_STEP].ravel())
    return float(roc_auc_score(np.concatenate(truth), np.concatenate(scores)))


def run_accuracy(sets: list[str], ks: list[int], seeds: list[int]) -> dict:
    store = ToolStore()
    results: dict = {}
    for dataset in sets:
        started = time.perf_counter()
        files, is_defect = pass_fail_files(dataset)
        images = [read_image(f) for f in files]
        shapes = [im.shape[:2] for im in images]
        masks = masks_of(dataset, files, is_defect)
        features: dict[InputShape, FeatureMaps] = {}
        good = np.flatnonzero(~is_defect)
        for k in ks:
            for seed in seeds:
                drawn = np.random.default_rng(seed).choice(good, k, replace=False)
                name = f"{dataset}-{k}-{seed}"
                tool = store.create(name, kind="anomaly", classes=("good",), allow_flips=True)
                meta = train_tool(tool, LoadedImages([images[i] for i in drawn], [0] * k,
                                                     [files[i] for i in drawn]), TrainingOptions(seed=seed))
                model = AnomalyModel.load(store.get(name).version_dir())
                store.delete(name)
                shape = InputShape.from_json(meta.details["input"], 0)
                if shape not in features:
                    features[shape] = anomaly_maps_of(images, "fast", model.settings, shape)
                rest = held_out_rows(is_defect, drawn, seed, dataset in ANOMALY_SUBSAMPLED)
                scores, maps = [], []
                for start in range(0, len(rest), 64):
                    s, m = model.score(features[shape].take(rest[start:start + 64]))
                    scores.append(s)
                    maps.append(m)
                scores, maps = np.concatenate(scores), np.concatenate(maps)
                row = {"image_auroc": float(roc_auc_score(is_defect[rest], scores)),
                       "training_s": meta.training_seconds,
                       "good_pass": float((scores[~is_defect[rest]] < 0.5).mean()),
                       "defect_fail": float((scores[is_defect[rest]] >= 0.5).mean())}
                if masks is not None:
                    row["pixel_auroc"] = pixel_auroc(maps, [shapes[i] for i in rest],
                                                     [masks[i] for i in rest])
                results.setdefault(f"{dataset}|{k}", []).append(row)
                print(f"{dataset} k={k} seed={seed}: {row} ({time.perf_counter() - started:.0f} s)",
                      flush=True)
    return results


def mean_std(rows: list[dict], key: str) -> str:
    values = [r[key] for r in rows if key in r]
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if values else "-"


def accuracy_report(results: dict, ks: list[int], seeds: list[int]) -> str:
    lines = [
        "### Accuracy (good photos only)",
        "",
        f"Protocol of `../shared/datasets/README.md`: k good photos drawn with seeds {seeds[0]}-{seeds[-1]}, "
        "every other image of the set scored (sets marked * there: a random 150 good + 150 defect "
        "per seed); `fast` profile, `allow_flips` on, default method settings "
        f"(`{json.dumps(AnomalySettings().to_json())}`). Pass/fail rates at the good-only threshold "
        f"(score 0.5). Mean ± std over seeds. Defaults tuned on {', '.join(TUNED)} only.",
        "",
        "| set | half | k | image ROC AUC | baseline (k=30) | pixel ROC AUC | good PASS rate | defect FAIL rate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dataset in SETS:
        for k in ks:
            rows = results.get(f"{dataset}|{k}")
            if rows:
                half = "tuned" if dataset in TUNED else "untuned"
                lines.append(f"| {dataset} | {half} | {k} | {mean_std(rows, 'image_auroc')} | "
                             f"{ANOMALY_BASELINE[dataset]:.3f} | {mean_std(rows, 'pixel_auroc')} | "
                             f"{mean_std(rows, 'good_pass')} | {mean_std(rows, 'defect_fail')} |")
    k = max(ks)
    per_set = {d: float(np.mean([r["image_auroc"] for r in results[f"{d}|{k}"]]))
               for d in SETS if f"{d}|{k}" in results}
    if per_set:
        lines += ["", f"Mean image ROC AUC at k={k} (baselines: plain patch-kNN):", "",
                  *halves_summary(per_set, ANOMALY_BASELINE, "image ROC AUC")]
        rates = {d: (np.mean([r["good_pass"] for r in results[f"{d}|{k}"]]),
                     np.mean([r["defect_fail"] for r in results[f"{d}|{k}"]])) for d in per_set}
        low_pass = [d for d, (p, _) in rates.items() if p < 0.95]
        low_fail = [d for d, (_, f) in rates.items() if per_set[d] >= 0.97 and f < 0.80]
        lines += [f"- at the good-only threshold: good PASS rate >= 0.95 on every set: "
                  f"{'met' if not low_pass else 'not met (' + ', '.join(low_pass) + ')'}; defect FAIL "
                  f"rate >= 0.80 on every set with ROC AUC >= 0.97: "
                  f"{'met' if not low_fail else 'not met (' + ', '.join(low_fail) + ')'}"]
    return "\n".join(lines)


def run_timing(frames: int) -> list[str]:
    store = ToolStore()
    files, is_defect = pass_fail_files("casting")
    good = [files[i] for i in np.flatnonzero(~is_defect)[:30]]
    data = LoadedImages([read_image(p) for p in good], [0] * 30, good)
    times = []
    for run in range(3):
        tool = store.create(f"timing-{run}", kind="anomaly", classes=("good",), allow_flips=True)
        started = time.perf_counter()
        train_tool(tool, data)
        times.append(time.perf_counter() - started)
    tool = store.get("timing-0")
    size_mb = sum(f.stat().st_size for f in tool.version_dir().iterdir()) / 2**20
    frame = np.full((480, 640, 3), 90, np.uint8)
    frame[80:400, 160:480] = cv2.resize(read_image(files[int(np.flatnonzero(is_defect)[0])]), (320, 320))
    tool.update(roi=ROI.from_pixels(160, 80, 480, 400, 640, 480))
    inspector = Inspector([ToolRunner(store.get(tool.name))])
    latencies = []
    for i in range(frames + 20):
        started = time.perf_counter()
        Inspector.draw(frame, inspector.inspect(frame))
        if i >= 20:
            latencies.append((time.perf_counter() - started) * 1000)
    return [
        "### Speed and size (`fast` profile)",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| training from 30 good photos, first run (s) | {times[0]:.1f} | <= 30 |",
        f"| training from 30 good photos, next runs (s) | {np.median(times[1:]):.1f} | <= 30 |",
        f"| live frame 640x480 with anomaly map, p50 (ms) | {np.percentile(latencies, 50):.1f} | - |",
        f"| live frame 640x480 with anomaly map, p95 (ms) | {np.percentile(latencies, 95):.1f} | <= 50 |",
        f"| model version on disk (MB) | {size_mb:.1f} | <= 50 |",
        "",
        "Training (casting, `allow_flips`): 8 orientations per photo, coreset memory, leave-one-out "
        "calibration, save. Latency: "
        f"{frames} frames after 20 warm-up frames, `Inspector.inspect` (ROI crop, backbone, patch "
        "search, smoothing) plus drawing the map.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["accuracy", "timing", "report"])
    parser.add_argument("--sets", nargs="+", default=list(SETS))  # accuracy only
    parser.add_argument("--ks", nargs="+", type=int, default=[10, 30])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--frames", type=int, default=300)
    args = parser.parse_args()
    use_scratch_workspace()
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.only in (None, "accuracy"):
        stored.setdefault("accuracy", {}).update(run_accuracy(args.sets, args.ks, args.seeds))
        stored["accuracy_machine"] = machine()
    if args.only in (None, "timing"):
        stored["timing"] = run_timing(args.frames)
        stored["timing_machine"] = machine()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(stored, indent=1))
    body = ["## Anomaly tools (trained on good photos only)", ""]
    if "accuracy" in stored:
        body += [f"Accuracy machine: {stored['accuracy_machine']}.", "",
                 accuracy_report(stored["accuracy"], args.ks, args.seeds), ""]
    if "timing" in stored:
        body += [f"Timing machine: {stored['timing_machine']}.", "", *stored["timing"]]
    write_section("anomaly", "\n".join(body))


if __name__ == "__main__":
    main()
