"""Shared fixtures: real photos from ../shared/datasets and small real models trained on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.engine.training import TrainingOptions, train_tool
from core.store.datasets import LoadedImages, image_files, read_image
from core.store.tools import ToolStore

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def sample_paths(dataset: str, per_class: int, seed: int, skip: int = 0) -> dict[str, list[Path]]:
    """``per_class`` random good and defect files of a set (defect classes pooled), after ``skip``."""
    root = DATASETS / dataset / "images"
    if not root.is_dir():
        pytest.fail(f"the shared datasets are missing: expected {root}")
    rng = np.random.default_rng(seed)
    good = image_files(root / "good")
    defect = [p for d in sorted(root.iterdir()) if d.name != "good" for p in image_files(d)]
    picks = {}
    for name, files in (("good", good), ("defect", defect)):
        order = rng.permutation(len(files))
        picks[name] = [files[i] for i in order[skip:skip + per_class]]
    return picks


def load_sample(dataset: str, per_class: int, seed: int, skip: int = 0) -> LoadedImages:
    loaded = LoadedImages()
    for label, paths in enumerate(sample_paths(dataset, per_class, seed, skip).values()):
        for path in paths:
            loaded.images.append(read_image(path))
            loaded.labels.append(label)
            loaded.paths.append(path)
    return loaded


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    """An empty station workspace (what INSPECTOR_HOME points at)."""
    home = tmp_path / "station"
    monkeypatch.setenv("INSPECTOR_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def trained_workspace(tmp_path_factory) -> Path:
    """A workspace with tool 'casting' trained on 12 good + 12 defect real casting photos."""
    home = tmp_path_factory.mktemp("trained")
    tool = ToolStore(home).create("casting", allow_flips=True)
    train_tool(tool, load_sample("casting", 12, seed=1), TrainingOptions(views_per_image=2))
    return home


@pytest.fixture
def casting_tool(trained_workspace, workspace):
    """A private copy of the trained casting tool in this test's own workspace."""
    import shutil

    shutil.copytree(trained_workspace / "tools", workspace / "tools")
    return ToolStore(workspace).get("casting")


def on_conveyor(photo: np.ndarray, frame: tuple[int, int] = (480, 640), grey: int = 150,
                seed: int = 0, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """A camera's view of a part: the photo's round part (a disc of 0.47 of its side, soft edge)
    placed at the centre of a grey conveyor (moved by ``offset``, x and y pixels: where a part
    stops varies a little) with a little sensor noise, as a BGR frame."""
    import cv2

    h, w = frame
    noise = np.random.default_rng(seed).integers(0, 10, (h, w, 1), dtype=np.uint8)
    scene = cv2.add(np.full((h, w, 3), grey - 5, np.uint8), np.repeat(noise, 3, axis=2))
    ph, pw = photo.shape[:2]
    yy, xx = np.mgrid[:ph, :pw]
    mask = np.clip((0.47 * min(ph, pw) - np.hypot(yy - ph / 2, xx - pw / 2)) / 4, 0, 1)[..., None]
    y0, x0 = (h - ph) // 2 + offset[1], (w - pw) // 2 + offset[0]
    under = scene[y0:y0 + ph, x0:x0 + pw].astype(np.float32)
    scene[y0:y0 + ph, x0:x0 + pw] = (photo * mask + under * (1 - mask)).astype(np.uint8)
    return scene
