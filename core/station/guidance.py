"""What an engineer should do next with a tool, in plain words."""

from __future__ import annotations

from core.engine.kinds import get_kind
from core.errors import InspectorError
from core.station.line_learning import new_photos_note
from core.station.live_station import line_state
from core.store.datasets import MIN_IMAGES_PER_CLASS, ToolDataset, check_trainable
from core.store.tools import Tool

GOOD_ENOUGH = 0.9  # below this validation balanced accuracy, suggest more photos and a review


def active_balanced_accuracy(tool: Tool) -> float | None:
    """Validation balanced accuracy of the tool's active model, or None without one."""
    if not tool.config.active_version:
        return None
    try:
        return tool.version_meta().validation.balanced_accuracy
    except (InspectorError, KeyError, OSError, ValueError):
        return None


def next_steps(tool: Tool) -> list[str]:
    """Hints in order: photos to capture, training, getting a version onto the line (a trial,
    then promotion), retraining, then readiness."""
    kind = get_kind(tool.config.kind)
    counts = ToolDataset(tool.images_dir, tool.config.classes).counts()
    try:
        check_trainable(counts, kind=kind.name)
    except InspectorError:
        return [f"Capture {MIN_IMAGES_PER_CLASS - n} more '{name}' photo(s) "
                f"(have {n}, need {MIN_IMAGES_PER_CLASS})."
                for name, n in counts.items()
                if n < MIN_IMAGES_PER_CLASS and name in kind.classes_to_capture(tool.config.classes)]
    versions = tool.versions()
    if not versions:
        return ["Enough photos: train a first model on the Training page." if kind.learns else
                "Say what it must read on the Training page and save the setup."]
    line = line_state(tool.folder.parent.parent)  # the workspace of the tool's store
    on_line, trial = line.tools.get(tool.name), line.trials.get(tool.name)
    hints = []
    if trial is not None:
        hints.append(f"{trial.version} runs as a trial on the line: watch it agree on the Live "
                     "inspection page, then promote it on the Training page.")
    elif on_line is None:
        active = tool.config.active_version
        if not tool.config.enabled:
            hints.append("Trained but not running: the tool is disabled; enable it, then add it "
                         "to the line on the Live inspection page.")
        elif active:
            hints.append(f"Trained but not running: {active} is active but not on the line. "
                         "Add it on the Live inspection page ('Add to line'), or run a newer "
                         "version as a trial on the Training page, then promote it.")
        else:
            hints.append(f"Trained but not running: run {versions[-1].id} as a trial on the "
                         "Training page, then promote it.")
    from_the_line = new_photos_note(tool) if kind.learns else None  # labelled since the active version
    if from_the_line:
        hints.append(f"{from_the_line} on the Training page to use them.")
    elif kind.learns and sum(counts.values()) > sum(versions[-1].images.values()):
        hints.append("New photos since the last training: retrain to use them.")
    bacc = active_balanced_accuracy(tool)
    if bacc is not None and bacc < GOOD_ENOUGH:
        smallest = min(counts, key=counts.get)
        hints.append(f"Validation balanced accuracy is {bacc:.0%}: add photos (most needed: "
                     f"'{smallest}') and review the hardest images on the Labeling page.")
    return hints or [f"On the line with {on_line.version}: its verdicts show on the Live "
                     "inspection page."]
