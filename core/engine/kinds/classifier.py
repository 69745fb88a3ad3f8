"""The classifier kind: good against named defect classes, learnt from photos of each.

A version is a ``ClassifierHead`` (``core.engine.model``) over the frozen backbone, trained by few-shot
transfer learning (``core.engine.training.train_classifier``). Its defect score is 1 - P(good), its
heatmap the head's exact Grad-CAM, its validation cross-validated, and it exports to ONNX as one
graph with its backbone.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from core.engine.kinds._registry import REQUIRED, Explanation, Kind, Report, Trained, register_kind
from core.errors import InspectorError

if TYPE_CHECKING:
    from core.engine.model import ClassifierHead
    from core.engine.runtime import FeatureMaps
    from core.engine.training import TrainingOptions
    from core.store.datasets import LoadedImages
    from core.store.tools import ToolConfig, VersionMeta

WEIGHTS_FILE = "head.safetensors"


class ClassifierJudge:
    """A classifier version ready to judge the backbone's maps of ROIs."""

    def __init__(self, head: ClassifierHead):
        self.head = head

    def inputs(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return images

    def probabilities(self, maps: FeatureMaps) -> np.ndarray:
        return self.head.probabilities(maps)

    def scores(self, maps: FeatureMaps) -> np.ndarray:
        return self.head.defect_scores(self.head.probabilities(maps))

    def judge(self, maps: FeatureMaps, heatmap: bool) -> tuple[float, str, np.ndarray | None]:
        """The TTA rows' probabilities are averaged; the heatmap is of the ROI itself."""
        probabilities = self.head.probabilities(maps)
        mean = probabilities.mean(axis=0, keepdims=True)
        heat = None
        if heatmap:
            heat = self.head.gradcam(maps, 0, int(self.head.top_defect(probabilities[:1])[0]))
        return (float(self.head.defect_scores(mean)[0]),
                self.head.classes[int(self.head.top_defect(mean)[0])], heat)

    def explain(self, maps: FeatureMaps) -> list[Explanation]:
        probabilities = self.head.probabilities(maps)
        targets = self.head.top_defect(probabilities)
        scores = self.head.defect_scores(probabilities)
        return [Explanation(float(scores[i]), self.head.classes[int(targets[i])],
                            self.head.gradcam(maps, i, int(targets[i])), probabilities[i])
                for i in range(len(probabilities))]


@register_kind
class Classifier(Kind):
    name = "classifier"
    title = "good against named defect classes, learnt from photos of each"
    photos: ClassVar[str] = REQUIRED
    neural = True
    weights_file = WEIGHTS_FILE
    onnx = True
    balanced_score = True  # core.engine.training.fit_head: class_weight='balanced'

    def check_photos(self, counts: dict[str, int], minimum: int) -> None:
        """``minimum`` photos of every class, and photos of at least two."""
        if sum(1 for n in counts.values() if n > 0) < 2:
            have = ", ".join(f"{n} '{c}'" for c, n in counts.items())
            raise InspectorError("training needs photos of at least two classes (good and a defect): "
                                 f"there are {have}; capture photos of the missing class")
        short = {c: n for c, n in counts.items() if n < minimum}
        if short:
            advice = "; ".join(f"capture {minimum - n} more '{c}' image(s)" for c, n in short.items())
            raise InspectorError(f"not enough images to train ({minimum} per class needed): {advice}")

    def train(self, config: ToolConfig, data: LoadedImages, options: TrainingOptions,
              report: Report) -> Trained:
        from core.engine.training import train_classifier

        return train_classifier(config, data, options, report)

    def load(self, folder: Path, meta: VersionMeta) -> ClassifierJudge:
        from core.engine.model import ClassifierHead

        return ClassifierJudge(ClassifierHead.load(folder))

    def check_import(self, judge: ClassifierJudge, config: ToolConfig) -> None:
        if tuple(judge.head.classes) != config.classes:
            raise InspectorError("refused: the model's classes differ from the tool's")
