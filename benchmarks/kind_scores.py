"""Scores of a classifier and an anomaly tool on held-out real photos, to check that a refactor
of the kinds changes no score.

    python -m benchmarks.kind_scores save BEFORE.npz     # on the code before the change
    python -m benchmarks.kind_scores compare BEFORE.npz  # after: max difference, in BENCHMARKS.md

Both tools are trained with a fixed seed on a few casting photos; each is scored on photos it
never saw, through the two ways the station scores (``TrainedModel.defect_scores`` for files,
``Inspector.inspect`` for a live frame, heatmaps included).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import DATASETS, machine, write_section
from core.engine.inference import Inspector, ToolRunner, TrainedModel
from core.engine.training import TrainingOptions, train_tool
from core.store.datasets import LoadedImages, image_files, read_image
from core.store.tools import ToolStore

TRAIN, HELD_OUT = 6, 8  # photos per class


def _photos(name: str, start: int, count: int) -> list[Path]:
    return image_files(DATASETS / "casting" / "images" / name)[start:start + count]


def scores() -> dict[str, np.ndarray]:
    """Every score of both tools on the held-out photos."""
    data = LoadedImages()
    for label, name in enumerate(("good", "defect")):
        for path in _photos(name, 0, TRAIN):
            data.images.append(read_image(path))
            data.labels.append(label)
            data.paths.append(path)
    held_out = [read_image(p) for name in ("good", "defect") for p in _photos(name, TRAIN, HELD_OUT)]
    out = {}
    with tempfile.TemporaryDirectory() as home:
        store = ToolStore(Path(home))
        for kind in ("classifier", "anomaly"):
            tool = store.create(kind, kind=kind, allow_flips=True)
            train_tool(tool, data, TrainingOptions(views_per_image=2, seed=0, min_per_class=5))
            tool = store.get(kind)
            out[f"{kind}_files"] = TrainedModel(tool).defect_scores(held_out)
            inspector = Inspector([ToolRunner(tool)])
            live = [inspector.inspect(image, heatmaps=True)[0] for image in held_out]
            out[f"{kind}_live"] = np.array([r.score for r in live])
            out[f"{kind}_heat"] = np.stack([r.heatmap for r in live])
    return out


def main() -> None:
    action, path = sys.argv[1], Path(sys.argv[2])
    now = scores()
    if action == "save":
        np.savez(path, **now)
        print(f"saved {', '.join(now)} to {path}")
        return
    before = np.load(path)
    rows = []
    for key, values in now.items():
        difference = float(np.abs(values - before[key]).max())
        same = "bit-identical" if np.array_equal(values, before[key]) else f"max difference {difference:.3g}"
        rows.append(f"| {key.replace('_', ' ')} | {values.size} | {same} |")
        print(f"{key}: {same}")
    write_section("kind-scores", "\n".join([
        "## Classifier and anomaly scores through the kinds registry (`benchmarks/kind_scores.py`)",
        "",
        f"Both kinds trained with seed 0 on {TRAIN} + {TRAIN} casting photos, scored on the next "
        f"{HELD_OUT} + {HELD_OUT}, before and after the kinds moved behind `core.engine.kinds`; files: "
        "`TrainedModel.defect_scores`, live: `Inspector.inspect` scores, heat: its heatmaps. "
        f"{machine()}.", "",
        "| scores | values | after against before |", "|---|---|---|", *rows]))


if __name__ == "__main__":
    main()
