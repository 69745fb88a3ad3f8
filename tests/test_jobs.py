"""Background training jobs on real casting photos: progress, result without activation, one
running job per tool, cancel, and errors reported instead of raised."""

from __future__ import annotations

import threading

import pytest

from core.engine.training import TrainingOptions, train_tool
from core.errors import InspectorError
from core.station.jobs import job_for, start_training
from core.store.datasets import ToolDataset
from core.store.tools import ToolStore
from tests.conftest import sample_paths

FAST = TrainingOptions(views_per_image=1, folds=2, activate=False)
TIMEOUT = 300


def tool_with_photos(name: str, per_class: int):
    tool = ToolStore().create(name, allow_flips=True)
    ds = ToolDataset(tool.images_dir, tool.config.classes)
    for cls, paths in sample_paths("casting", per_class, seed=3).items():
        for path in paths:
            ds.add_file(cls, path.read_bytes(), path.name)
    return tool


class Gate:
    """Holds the real trainer back until released, so a test can act while a job is running."""

    def __init__(self) -> None:
        self.open = threading.Event()

    def __call__(self, tool, **kwargs) -> dict:
        assert self.open.wait(TIMEOUT)
        return train_tool(tool, **kwargs)


def test_background_training_reports_progress_and_does_not_activate(workspace):
    tool = tool_with_photos("casting", 5)
    job = start_training(tool)  # the default options: full training, no activation
    assert job_for(tool) is job and job.tool == "casting" and job.profile == tool.config.profile
    assert job.wait(TIMEOUT) and not job.running
    assert job.error is None, job.error
    assert [v.id for v in tool.versions()] == [job.meta.id]
    # full training: every photo in its 8 orientations (the tool allows flips)
    assert job.meta.images == {"good": 5, "defect": 5} and job.meta.details["views_per_image"] == 8
    assert job.progress.stage == "saving" and job.progress.fraction == 1.0
    assert ToolStore().get("casting").config.active_version is None  # the engineer activates


def test_one_running_job_per_tool_and_cancel_keeps_the_model(workspace):
    tool = tool_with_photos("casting", 5)
    gate = Gate()
    job = start_training(tool, FAST, trainer=gate)
    try:
        with pytest.raises(InspectorError, match="'casting' is already training"):
            start_training(tool, FAST)
        assert job_for(tool) is job
        other = ToolStore().duplicate("casting", "casting copy")
        parallel = start_training(other, FAST, trainer=gate)  # another tool may train meanwhile
        job.cancel.set()
    finally:
        gate.open.set()
    assert job.wait(TIMEOUT) and parallel.wait(TIMEOUT)
    assert job.error == "training was cancelled; the active model is unchanged"
    assert job.meta is None and tool.versions() == []
    assert parallel.error is None and [v.id for v in other.versions()] == [parallel.meta.id]

    again = start_training(tool, FAST)  # a finished job does not block the next one
    assert again is not job and job_for(tool) is again
    assert again.wait(TIMEOUT) and again.error is None


def test_refusals_and_failures_become_the_jobs_error(workspace):
    short = tool_with_photos("short", 2)
    job = start_training(short, FAST)
    assert job.wait(TIMEOUT)
    assert "not enough images to train" in job.error and job.meta is None

    def broken(tool, **kwargs) -> dict:
        raise RuntimeError("disk unplugged")

    job = start_training(short, FAST, trainer=broken)
    assert job.wait(TIMEOUT)
    assert job.error == "training failed unexpectedly: disk unplugged"
