"""Training in the background: one running job per tool, its progress, cancel, result or error.

Jobs live at module level: a station is one process, and a job must outlive the page script
that started it (every rerun of a Streamlit page is a fresh script run).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from core.engine.training import Progress, TrainingOptions, train_tool
from core.errors import InspectorError
from core.security.access import CONFIGURE, as_user, require
from core.store.tools import Tool, VersionMeta

LOG = logging.getLogger("shopfloor_inspector.jobs")

BACKGROUND = TrainingOptions(activate=False)  # the engineer reviews a version, then activates it

Trainer = Callable[..., dict]  # train_tool's signature: (tool, *, options, on_progress, cancel)


@dataclass
class TrainingJob:
    """One training run of one tool, followed from any thread."""

    tool: str
    profile: str
    cancel: threading.Event = field(default_factory=threading.Event)
    progress: Progress | None = None  # the latest progress report
    meta: VersionMeta | None = None  # the new version's metadata once it succeeded
    error: str | None = None  # what went wrong (or that it was cancelled)
    started: float = field(default_factory=time.time)
    thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the run to end; True if it has."""
        if self.thread is not None:
            self.thread.join(timeout)
        return not self.running


_jobs: dict[str, TrainingJob] = {}
_lock = threading.Lock()


def _key(tool: Tool) -> str:
    return str(tool.folder.resolve())


def job_for(tool: Tool) -> TrainingJob | None:
    """The tool's latest job (running or finished), or None if it never trained here."""
    with _lock:
        return _jobs.get(_key(tool))


def start_training(tool: Tool, options: TrainingOptions = BACKGROUND,
                   trainer: Trainer = train_tool) -> TrainingJob:
    """Train a new version of ``tool`` in a thread; refused while the tool is already training.

    By default the new version is not activated (``BACKGROUND``). The job's ``error`` says why a
    run failed; a cancelled run leaves the active model unchanged. The run acts as whoever
    started it (their role is checked here, and their name is on the new version's audit).
    """
    user = require(CONFIGURE)
    with _lock:
        job = _jobs.get(_key(tool))
        if job is not None and job.running:
            raise InspectorError(f"'{tool.name}' is already training")
        job = TrainingJob(tool.name, tool.config.profile)
        _jobs[_key(tool)] = job

        def run() -> None:
            try:
                with as_user(user):
                    job.meta = trainer(tool, options=options,
                                       on_progress=lambda p: setattr(job, "progress", p),
                                       cancel=job.cancel)
            except InspectorError as exc:
                job.error = str(exc)
            except Exception as exc:  # noqa: BLE001 - shown to the engineer, logged in full
                LOG.exception("training %s failed", tool.name)
                job.error = f"training failed unexpectedly: {exc}"

        job.thread = threading.Thread(target=run, name=f"train-{tool.name}", daemon=True)
        job.thread.start()  # under the lock: no second start can see a job without its thread
    return job
