"""The line's review queue on the Labeling page (hardest first, a click labels a kept crop into
the tool's photos, undo takes it out) and the count of new labelled photos on Home and Training,
driven with AppTest on real casting photos judged by a real trained tool."""

from __future__ import annotations

from core.engine.inference import Inspector, ToolRunner
from core.station.line_learning import KeepPolicy, LineKeeper, ReviewQueue
from core.store.datasets import ToolDataset
from core.store.tools import ToolStore
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


def kept(root, count: int = 3) -> ReviewQueue:
    """The casting tool's queue once the station kept ``count`` unseen photos it judged."""
    tool = ToolStore(root).get("casting")
    runner = ToolRunner(tool)
    keeper = LineKeeper(ReviewQueue(tool, KeepPolicy(margin=1.0)))
    for photo in load_sample("casting", count, seed=3, skip=20).images[:count]:
        keeper.offer(photo, Inspector([runner]).inspect(photo, heatmaps=False)[0])
    keeper.close()
    return ReviewQueue(tool)


def counts(root) -> dict[str, int]:
    tool = ToolStore(root).get("casting")
    return ToolDataset(tool.images_dir, tool.config.classes).counts()


def test_the_review_queue_labels_the_hardest_crop_and_undoes_it(trained_home):  # noqa: F811
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


def test_home_and_training_count_the_photos_labelled_since_the_active_version(
        trained_home):  # noqa: F811 - the imported fixture
    queue = kept(trained_home, 2)
    for record in queue.pending():
        queue.label(record.id, "good", who="ana")
    active = ToolStore(trained_home).get("casting").config.active_version
    wanted = f"2 new photos since {active}: retrain"
    start = page("Home.py").run()
    no_errors(start)
    assert f"**casting**: {wanted} on the Training page to use them." in texts(start)
    training = page("pages/3_Training.py").run()
    no_errors(training)
    assert any(i.value.startswith(wanted) for i in training.info)


def test_the_history_page_shows_how_often_operators_correct_each_tool(workspace):
    from datetime import date, datetime

    from core.records.history import open_history
    from core.records.verdicts import CORRECTED, VerdictRecord
    from core.store.settings import StationSettings
    from core.store.tools import ToolChange

    store = open_history(StationSettings(name="st1"), root=workspace)
    noon = datetime.combine(date.today(), datetime.min.time()).replace(hour=12).timestamp()
    store.write("st1", [VerdictRecord(noon + i, "casting", "PASS", None, 0.1, 0.5, "v001", "trigger")
                        for i in range(4)],
                [ToolChange("casting", CORRECTED, {"verdict": "PASS", "label": "defect"}, "kiosk",
                            noon + 5)])
    at = page("pages/5_History.py").run()
    no_errors(at)
    assert any("Operator corrections per tool" in m.value for m in at.markdown)
    table = at.dataframe[-1].value.set_index("Tool")
    assert (table.loc["casting", "Parts"], table.loc["casting", "Corrections"]) == (4, 1)
    assert table.loc["casting", "Corrected"] == "25.0%"
    store.close()


def test_a_fail_image_of_the_history_goes_to_the_tool_s_review_queue(trained_home):  # noqa: F811
    from datetime import date, datetime

    from core.records.history import open_history
    from core.records.verdicts import VerdictRecord
    from core.station.line_learning import FROM_HISTORY
    from core.store.settings import StationSettings

    store = open_history(StationSettings(name="st1", keep_fail_images=True), root=trained_home)
    photo = load_sample("casting", 1, seed=6).images[1]  # a defective part
    noon = datetime.combine(date.today(), datetime.min.time()).replace(hour=12).timestamp()
    store.write("st1", [VerdictRecord(noon, "casting", "FAIL", "defect", 0.8, 0.5, "v001", "trigger",
                                      "0", 0.8, 10.0, None, (0, 0, *photo.shape[1::-1]), photo)])
    at = page("pages/5_History.py").run()
    no_errors(at)
    at.button(key="history_review").click().run()
    no_errors(at)
    assert "Sent to the review queue of casting" in texts(at)
    kept = ReviewQueue(ToolStore(trained_home).get("casting")).pending()
    assert [(k.reason, k.score, k.version) for k in kept] == [(FROM_HISTORY, 0.8, "v001")]
    assert kept[0].id.startswith("event-")
    at.button(key="history_review").click().run()  # sent again: still one crop
    assert len(ReviewQueue(ToolStore(trained_home).get("casting")).pending()) == 1
    store.close()
