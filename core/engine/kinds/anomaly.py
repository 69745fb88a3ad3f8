"""The anomaly kind: learnt from good photos only, it scores how unusual the ROI looks.

A version is an ``AnomalyModel`` (``core.engine.anomaly``: memories of good patches) trained by
``core.engine.training.train_anomaly``. Its defect class is always ``ANOMALY`` (it knows only
'unusual'), its heatmap the anomaly map, its validation leave-one-out on the good photos (defect
photos, if any, scored by the model). It has no ONNX export: its memory search is not one graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from core.engine.kinds._registry import OPTIONAL, Explanation, Kind, Report, Trained, register_kind
from core.errors import InspectorError

if TYPE_CHECKING:
    from core.engine.anomaly import AnomalyModel
    from core.engine.runtime import FeatureMaps
    from core.engine.training import TrainingOptions
    from core.store.datasets import LoadedImages
    from core.store.tools import ToolConfig, VersionMeta

MEMORY_FILE = "memory.safetensors"
ANOMALY = "anomaly"  # the defect class an anomaly tool reports: it knows only 'unusual'


class AnomalyJudge:
    """An anomaly version ready to judge the backbone's maps of ROIs."""

    def __init__(self, model: AnomalyModel):
        self.model = model

    def inputs(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """The ROIs with their lighting evened out, as the memory was learnt from."""
        return self.model.settings.inputs(images)

    def scores(self, maps: FeatureMaps) -> np.ndarray:
        return self.model.score(maps)[0]

    def judge(self, maps: FeatureMaps, heatmap: bool) -> tuple[float, str, np.ndarray | None]:
        scores, anomaly = self.model.score(maps)
        return float(scores.mean()), ANOMALY, self.model.heat(anomaly[0]) if heatmap else None

    def explain(self, maps: FeatureMaps) -> list[Explanation]:
        scores, anomaly = self.model.score(maps)
        return [Explanation(float(s), ANOMALY, self.model.heat(m), None) for s, m in zip(scores, anomaly)]


@register_kind
class Anomaly(Kind):
    name = "anomaly"
    title = "learns what good looks like from good photos only"
    photos: ClassVar[str] = OPTIONAL
    neural = True
    weights_file = MEMORY_FILE

    def check_photos(self, counts: dict[str, int], minimum: int) -> None:
        """``minimum`` good photos; defect photos are optional (even none)."""
        good = counts.get("good", 0)
        if good < minimum:
            raise InspectorError(f"an anomaly tool learns from good photos only: capture "
                                 f"{minimum - good} more 'good' photo(s) (have {good}, need {minimum}); "
                                 "defect photos are optional")

    def train(self, config: ToolConfig, data: LoadedImages, options: TrainingOptions,
              report: Report) -> Trained:
        from core.engine.training import train_anomaly

        return train_anomaly(config, data, options, report)

    def load(self, folder: Path, meta: VersionMeta) -> AnomalyJudge:
        from core.engine.anomaly import AnomalyModel

        return AnomalyJudge(AnomalyModel.load(folder))
