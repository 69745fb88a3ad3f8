"""The line's review queue on the Labeling page (hardest first, a click labels a kept crop into
the tool's photos, undo takes it out) and the count of new labelled photos on Home and Training,
driven with AppTest on real casting photos judged by a real trained tool."""

from __future__ import annotations

from core.datasets import ToolDataset
from core.inference import Inspector, ToolRunner
from core.line_learning import KeepPolicy, LineKeeper, ReviewQueue
from core.tools import ToolStore
from tests.conftest import load_sample
from tests.test_pages import (  # noqa: F401 - the fixtures of the pages' tests
    home,
    no_errors,
    page,
    texts,
    trained_home,
    trained_station,
)

LABELING = "pages/2_Labeling.py"


def kept(home, count: int = 3) -> ReviewQueue:
    """The casting tool's queue once the station kept ``count`` unseen photos it judged."""
    tool = ToolStore(home).get("casting")
    runner = ToolRunner(tool)
    keeper = LineKeeper(ReviewQueue(tool, KeepPolicy(margin=1.0)))
    for photo in load_sample("casting", count, seed=3, skip=20).images[:count]:
        keeper.offer(photo, Inspector([runner]).inspect(photo, heatmaps=False)[0])
    keeper.close()
    return ReviewQueue(tool)


def counts(home) -> dict[str, int]:
    tool = ToolStore(home).get("casting")
    return ToolDataset(tool.images_dir, tool.config.classes).counts()


def test_the_review_queue_labels_the_hardest_crop_and_undoes_it(trained_home):
    queue = kept(trained_home)
    hardest = queue.pending()[0]
    before = counts(trained_home)
    at = page(LABELING).run()
    no_errors(at)
    assert "Kept on the line: 3 waiting" in [s.value for s in at.subheader]
    assert f"score {hardest.score:.2f}" in at.caption[0].value  # hardest first
    at.toggle(key="review_heatmaps").set_value(True).run()  # Grad-CAM of the crops shown
    no_errors(at)

    at.button(key=f"review::{hardest.id}::defect").click().run()
    no_errors(at)
    assert counts(trained_home) == {**before, "defect": before["defect"] + 1}
    assert "Kept on the line: 2 waiting" in [s.value for s in at.subheader]
    assert f"Kept crop {hardest.id}: 'defect' (in the photos as defect/" in texts(at)
    assert queue.labelled()[0].id == hardest.id

    at.button(key=f"review_undo::{hardest.id}").click().run()
    no_errors(at)
    assert counts(trained_home) == before
    assert f"Kept crop {hardest.id}: waiting again." in texts(at)
    assert queue.pending()[0].id == hardest.id

    next_one = queue.pending()[1]
    at.button(key=f"review::{next_one.id}::discard").click().run()
    no_errors(at)
    assert counts(trained_home) == before  # a discarded crop is trained on by nobody
    assert [r.label for r in queue.labelled()] == ["discard"]
