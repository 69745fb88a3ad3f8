"""``inspector review`` end to end on real casting photos kept by a real trained tool: list,
label (refused to an operator's shell), undo and export; and the next training learns from the
photos labelled there."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from core.engine.inference import Inspector, ToolRunner
from core.engine.training import TrainingOptions, train_tool
from core.station.line_learning import KeepPolicy, LineKeeper, ReviewQueue
from core.store.datasets import ToolDataset
from tests.conftest import load_sample


def inspector(home, *args, role: str | None = None):
    env = {**os.environ, "INSPECTOR_HOME": str(home)}
    env.pop("INSPECTOR_ROLE", None)
    if role:
        env["INSPECTOR_ROLE"] = role
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def test_review_lists_labels_undoes_and_exports_and_training_learns_from_it(casting_tool,
                                                                           workspace, tmp_path):
    runner, keeper = ToolRunner(casting_tool), LineKeeper(ReviewQueue(casting_tool, KeepPolicy(margin=1.0)))
    for photo in load_sample("casting", 2, seed=3, skip=20).images:
        keeper.offer(photo, Inspector([runner]).inspect(photo, heatmaps=False)[0])
    keeper.close()
    hardest = ReviewQueue(casting_tool).pending()

    listed = inspector(workspace, "review", "list", "casting", "--json", role="operator")
    assert listed.returncode == 0, listed.stderr
    assert [r["id"] for r in json.loads(listed.stdout)] == [r.id for r in hardest]
    refused = inspector(workspace, "review", "label", "casting", hardest[0].id, "defect",
                        role="operator")
    assert refused.returncode == 2 and "engineer" in refused.stderr and "INSPECTOR_ROLE" in refused.stderr

    labels = ["good", "defect", "defect", "discard"]
    for record, label in zip(hardest, labels):
        done = inspector(workspace, "review", "label", "casting", record.id, label)
        assert done.returncode == 0, done.stderr
        assert f"{record.id} labelled '{label}'" in done.stdout
    undone = inspector(workspace, "review", "undo", "casting", hardest[2].id)
    assert undone.returncode == 0 and "waiting again" in undone.stdout
    unknown = inspector(workspace, "review", "label", "casting", hardest[2].id, "scratch")
    assert unknown.returncode == 2 and "unknown label 'scratch'" in unknown.stderr
    labelled = inspector(workspace, "review", "list", "casting", "--labelled")
    assert labelled.stdout.count("\n") == 3 and "good by cli:" in labelled.stdout

    out = tmp_path / "review"
    exported = inspector(workspace, "review", "export", "casting", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    assert sorted(p.parent.name for p in out.rglob("*.png")) == ["defect", "discard", "good",
                                                                 "waiting"]
    assert len(json.loads((out / "review.json").read_text())) == 4

    dataset = ToolDataset(casting_tool.images_dir, casting_tool.config.classes)
    assert dataset.counts() == {"good": 1, "defect": 1}  # what the review put there
    sample = load_sample("casting", 5, seed=1)
    for path, label in zip(sample.paths, sample.labels):
        dataset.add_file(casting_tool.config.classes[label], path.read_bytes(), path.name)
    meta = train_tool(casting_tool, options=TrainingOptions(views_per_image=1, folds=2))
    assert meta.images == {"good": 6, "defect": 6}  # the reviewed photos are trained on


def test_the_review_command_and_queue_never_import_torch():
    light = subprocess.run([sys.executable, "-c", "import sys, core.cli, core.station.review_cli, "
                            "core.station.line_learning; sys.exit('torch' in sys.modules)"],
                           capture_output=True, text=True)
    assert light.returncode == 0, light.stderr
