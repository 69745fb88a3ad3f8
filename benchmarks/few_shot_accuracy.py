"""Few-shot pass/fail accuracy on every shared set, with the protocol of the datasets README.

For k in 5, 10, 20, 30 and seeds 0-4: draw k good and k defect images, train a tool on them with
the product's own training (several views, class-balanced head, cross-validated threshold),
then score every image not drawn at the tool's own threshold. Each image's feature maps are
computed once per profile and reused for scoring, which is exactly what the live engine computes
for that image.

    python benchmarks/few_shot_accuracy.py [--profiles fast balanced accurate] [--ks 5 10 20 30]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.common import SETS, machine, pass_fail_files, use_scratch_workspace, write_section
from core.datasets import LoadedImages, read_image
from core.metrics import pass_fail_metrics
from core.model import ClassifierHead
from core.runtime import get_extractor
from core.tools import ToolStore
from core.training import TrainingOptions, train_tool

RESULTS = Path(__file__).parent / "results" / "few_shot_accuracy.json"
BASELINE = {"casting": 0.94, "magnetic_tile": 0.76, "elpv": 0.72, "mvtec_bottle": 0.94}


def run(profiles: list[str], ks: list[int], seeds: list[int]) -> dict:
    store = ToolStore()
    results: dict = {}
    for dataset in SETS:
        files, is_defect = pass_fail_files(dataset)
        images = [read_image(f) for f in files]
        for profile in profiles:
            started = time.perf_counter()
            maps = get_extractor(profile).images(images)
            for k in ks:
                for seed in seeds:
                    rng = np.random.default_rng(seed)
                    drawn = np.concatenate([rng.choice(np.flatnonzero(is_defect == side), k, replace=False)
                                            for side in (False, True)])
                    data = LoadedImages([images[i] for i in drawn], [int(is_defect[i]) for i in drawn],
                                        [files[i] for i in drawn])
                    name = f"{dataset}-{profile}-{k}-{seed}"
                    tool = store.create(name, profile=profile, allow_flips=True)
                    train_tool(tool, data, TrainingOptions(seed=seed))
                    tool = store.get(name)
                    head = ClassifierHead.load(tool.version_dir())
                    rest = np.setdiff1d(np.arange(len(files)), drawn)
                    scores = head.defect_scores(head.probabilities(maps.take(rest)))
                    m = pass_fail_metrics(is_defect[rest], scores, tool.config.threshold)
                    results.setdefault((dataset, profile, k), []).append(
                        (m["balanced_accuracy"], m["auroc"]))
                    store.delete(name)
                ba = [r[0] for r in results[(dataset, profile, k)]]
                print(f"{dataset} {profile} k={k}: balanced accuracy {np.mean(ba):.3f} "
                      f"({time.perf_counter() - started:.0f} s)", flush=True)
    return results


def report(results: dict, profiles: list[str], ks: list[int], seeds: list[int]) -> str:
    lines = [
        "## Few-shot accuracy (pass/fail, good vs all defects)",
        "",
        f"Machine: {machine()}. Protocol of `../shared/datasets/README.md`: k good + k defect "
        f"images drawn with seeds {seeds[0]}-{seeds[-1]}, every other image scored at the tool's "
        "own threshold (suggested by cross-validation at training). Mean ± std over seeds. "
        "`allow_flips` on (these parts look the same mirrored): 8 orientations per training image.",
        "",
        "| set | profile | " + " | ".join(f"k={k} bal. acc." for k in ks) + " | "
        + " | ".join(f"k={k} ROC AUC" for k in ks) + " |",
        "|---|---|" + "---|" * (2 * len(ks)),
    ]
    for dataset in SETS:
        for profile in profiles:
            cells = []
            for metric in (0, 1):
                for k in ks:
                    values = [r[metric] for r in results[(dataset, profile, k)]]
                    cells.append(f"{np.mean(values):.3f} ± {np.std(values):.3f}")
            lines.append(f"| {dataset} | {profile} | " + " | ".join(cells) + " |")
    k = max(ks)
    lines += ["", f"Mean balanced accuracy over the four sets at k={k} (target >= 0.92, "
              "no set below its baseline):", ""]
    for profile in profiles:
        per_set = {d: float(np.mean([r[0] for r in results[(d, profile, k)]])) for d in SETS}
        below = [d for d in SETS if per_set[d] < BASELINE[d]]
        lines.append(f"- `{profile}`: **{np.mean(list(per_set.values())):.3f}** "
                     f"(baseline mean 0.84; below baseline: {', '.join(below) or 'none'})")
    return "\n".join(lines)


def merged_with_earlier_runs(results: dict) -> dict:
    """Keep earlier figures of profiles not re-run, so one profile can be re-measured alone."""
    earlier = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    earlier.update({"|".join(map(str, key)): value for key, value in results.items()})
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(earlier, indent=1))
    return {(d, p, int(k)): v for key, v in earlier.items() for d, p, k in [key.split("|")]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", default=["fast", "balanced", "accurate"])
    parser.add_argument("--ks", nargs="+", type=int, default=[5, 10, 20, 30])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    use_scratch_workspace()
    results = merged_with_earlier_runs(run(args.profiles, args.ks, args.seeds))
    profiles = [p for p in ("fast", "balanced", "accurate") if any(k[1] == p for k in results)]
    write_section("few-shot-accuracy", report(results, profiles, args.ks, args.seeds))


if __name__ == "__main__":
    main()
