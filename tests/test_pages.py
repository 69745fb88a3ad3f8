"""Dashboard pages driven headless with Streamlit's AppTest, on real casting photos.

Every test runs in its own temporary INSPECTOR_HOME; one small real model is trained once per
session (8 + 8 photos, 2 views each: seconds) and copied into the tests that need it.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.engine.training import TrainingOptions, train_tool
from core.records.history import open_history
from core.records.verdicts import VerdictRecord
from core.security.users import UserStore
from core.station.live_station import live_station
from core.store.datasets import ToolDataset, image_files, read_image
from core.store.settings import load_settings
from core.store.tools import ROI, ToolStore

APP = Path(__file__).resolve().parents[1]
if str(APP) not in sys.path:  # the pages' shared helpers are the package ``pages``
    sys.path.insert(0, str(APP))
DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
CASTING = DATASETS / "casting" / "images"
PER_CLASS = 8
TIMEOUT = 120


def casting_files(name: str, count: int, skip: int = 0) -> list[Path]:
    if not CASTING.is_dir():
        pytest.fail(f"the shared datasets are missing: expected {CASTING}")
    return image_files(CASTING / name)[skip:skip + count]


def fill_tool(store: ToolStore, name: str = "casting", per_class: int = PER_CLASS):
    tool = store.create(name, allow_flips=True)
    from core.store.datasets import ToolDataset

    ds = ToolDataset(tool.images_dir, tool.config.classes)
    for cls in ("good", "defect"):
        for path in casting_files(cls, per_class):
            ds.add_file(cls, path.read_bytes(), path.name)
    return tool


def _copy_cache(home: Path) -> None:
    """Reuse the backbone's ONNX graph if the station already built it (saves an export)."""
    cache = APP / "models" / "cache"
    if cache.is_dir():
        shutil.copytree(cache, home / "cache", dirs_exist_ok=True)


@pytest.fixture(scope="session")
def trained_station(tmp_path_factory) -> Path:
    """A workspace with tool 'casting': 8 good + 8 defect photos and one active model."""
    home = tmp_path_factory.mktemp("pages_station")
    _copy_cache(home)
    tool = fill_tool(ToolStore(home))
    train_tool(tool, options=TrainingOptions(views_per_image=2, folds=3))
    return home


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "station"
    home.mkdir()
    _copy_cache(home)
    monkeypatch.setenv("INSPECTOR_HOME", str(home))
    return home


@pytest.fixture
def trained_home(trained_station, home) -> Path:
    shutil.copytree(trained_station / "tools", home / "tools")
    return home


class FakeWebRtc:
    """Stands in for streamlit-webrtc, a browser component AppTest cannot run: records the
    frame callback so a test can push real frames through it, and says whether it 'plays'."""

    def __init__(self) -> None:
        self.playing = False
        self.callbacks: dict[str, object] = {}

    def __call__(self, key, *args, video_frame_callback=None, rtc_configuration=None, **kwargs):
        assert rtc_configuration == {"iceServers": []}  # a local station: no STUN server
        self.callbacks[key] = video_frame_callback
        return SimpleNamespace(state=SimpleNamespace(playing=self.playing))

    def send(self, key: str, image: np.ndarray) -> np.ndarray:
        import av

        out = self.callbacks[key](av.VideoFrame.from_ndarray(image, format="bgr24"))
        return out.to_ndarray(format="bgr24")


@pytest.fixture(autouse=True)
def webrtc(monkeypatch) -> FakeWebRtc:
    import streamlit_webrtc

    fake = FakeWebRtc()
    monkeypatch.setattr(streamlit_webrtc, "webrtc_streamer", fake)
    return fake


def page(path: str) -> AppTest:
    return AppTest.from_file(str(APP / path), default_timeout=TIMEOUT)


def log_in(at: AppTest, name: str, role: str, home: Path | None = None) -> AppTest:
    """Add ``name`` with ``role`` to the station's users (once) and log the page in as them
    through the sidebar's login form."""
    users = UserStore(open_history(root=home).engine)
    if users.get(name) is None:
        users.add(name, role, f"{name}-password")
    at.run()
    at.sidebar.text_input(key="login_name").input(name)
    at.sidebar.text_input(key="login_secret").input(f"{name}-password")
    at.sidebar.button(key="login_submit").click().run()
    assert f"Logged in as **{name}** ({role})" in [m.value for m in at.sidebar.markdown]
    return at


def no_errors(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [e.value for e in at.info] + [e.value for e in at.success] + [e.value for e in at.warning]
    return "\n".join(str(p) for p in parts)


# ------------------------------------------------------------------ Home

def test_home_creates_a_tool_and_refuses_a_duplicate(home):
    at = page("Home.py").run()
    no_errors(at)
    assert "No tool yet" in texts(at)

    at.text_input(key="new_name").input("impeller top")
    at.text_input(key="new_classes").input("good, crack, porosity")
    at.button[0].click().run()  # the form's submit button
    no_errors(at)
    tool = ToolStore(home).get("impeller top")
    assert tool.config.classes == ("good", "crack", "porosity")
    assert "Created tool 'impeller top'" in texts(at)
    assert at.dataframe[0].value["Tool"].tolist() == ["impeller top"]
    assert "Capture 5 more 'crack' photo(s)" in texts(at)

    at.text_input(key="new_name").input("impeller top")
    at.button[0].click().run()
    assert [e.value for e in at.error] == ["a tool named 'impeller top' already exists"]
    assert not at.exception


def test_home_rename_duplicate_and_delete_with_confirmation(home):
    ToolStore(home).create("alpha")
    at = log_in(page("Home.py"), "anna", "engineer", home)  # who, for the audit trail
    at.text_input(key="manage_new_name").input("beta")
    at.button(key="duplicate").click().run()
    no_errors(at)
    assert ToolStore(home).names() == ["alpha", "beta"]

    at.selectbox(key="manage_tool").select("alpha")
    at.text_input(key="manage_new_name").input("gamma")
    at.button(key="rename").click().run()
    no_errors(at)
    assert ToolStore(home).names() == ["beta", "gamma"]

    at.selectbox(key="manage_tool").select("beta")
    at.button(key="delete").click().run()
    assert ToolStore(home).names() == ["beta", "gamma"]  # nothing happens before confirming
    assert "Delete tool 'beta'" in texts(at)
    at.button(key="delete_confirm").click().run()
    no_errors(at)
    assert ToolStore(home).names() == ["gamma"]
    at.run()  # the confirmation stays, in the tab under the buttons, until dismissed
    assert "Deleted tool 'beta' with its photos and models." in texts(at)
    at.button(key="dismiss::home.edit").click().run()
    assert "Deleted tool 'beta'" not in texts(at)

    history = open_history(root=home)
    assert history.recorder(load_settings(home).name).flush(10)
    audit = history.changes()
    assert list(zip(audit["action"], audit["tool"], audit["actor"]))[::-1] == [
        ("duplicated", "beta", "anna"), ("renamed", "gamma", "anna"), ("deleted", "beta", "anna")]


def test_home_shows_validation_and_round_trips_a_tool_file(trained_home):
    at = page("Home.py").run()
    no_errors(at)
    row = at.dataframe[0].value.iloc[0]
    assert row["Tool"] == "casting" and row["Active version"].startswith("v001")
    assert row["Validation bal. acc."].endswith("%") and row["Last verdict"] == "-"

    history = open_history(root=trained_home)  # a verdict from an earlier run of the station
    history.write("line-1", [VerdictRecord(1.7e9, "casting", "FAIL", "defect", 0.9, 0.5, "v001")])
    row = page("Home.py").run().dataframe[0].value.iloc[0]
    assert row["Last verdict"].startswith("FAIL (") and ":" in row["Last verdict"]

    at.selectbox(key="export_tool").select("casting")
    at.button(key="export_prepare").click().run()
    no_errors(at)
    name, data = at.session_state["export_file"]
    assert name == "casting.inspector" and zipfile.is_zipfile(io.BytesIO(data))

    at.file_uploader(key="import_file").upload(name, data)
    at.text_input(key="import_name").input("casting copy")
    at.run()
    at.button(key="import_go").click().run()
    no_errors(at)
    copy = ToolStore(trained_home).get("casting copy")
    assert copy.config.active_version == ToolStore(trained_home).get("casting").config.active_version


def test_home_import_of_a_bad_file_shows_the_reason(home):
    at = page("Home.py").run()
    at.file_uploader(key="import_file").upload("notes.inspector", b"this is not a tool file")
    at.run()
    at.button(key="import_go").click().run()
    assert not at.exception
    assert len(at.error) == 1 and "is not a Shopfloor Inspector tool file" in at.error[0].value


# ------------------------------------------------------------------ Capture

def test_capture_adds_uploaded_photos_and_zips(home):
    fill_tool(ToolStore(home), per_class=2)
    at = page("pages/1_Capture.py").run()
    no_errors(at)

    photos = casting_files("defect", 3, skip=20)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for p in photos[1:]:
            archive.write(p, f"batch/{p.name}")
        archive.writestr("batch/readme.txt", "ignored")
    at.radio(key="upload_class").set_value("defect")
    uploader = at.file_uploader(key="upload_0")
    uploader.upload(photos[0].name, photos[0].read_bytes(), "image/jpeg")
    uploader.upload("more.zip", buffer.getvalue(), "application/zip")
    at.run()
    at.button(key="upload_add").click().run()
    no_errors(at)
    counts = ToolStore(home).get("casting")
    from core.store.datasets import ToolDataset
    assert ToolDataset(counts.images_dir, counts.config.classes).counts() == {"good": 2, "defect": 5}
    assert "Added 3 photo(s) to 'defect'" in texts(at)
    at.run()  # the confirmation stays until dismissed
    assert "Added 3 photo(s) to 'defect'" in texts(at)
    at.button(key="dismiss::capture.upload").click().run()
    assert "Added 3 photo(s)" not in texts(at)


class Camera:
    """A camera thread pushing real frames through the page's frame callback every 30 ms."""

    def __init__(self, webrtc: FakeWebRtc, frames: list[np.ndarray]):
        import threading

        self.stop = threading.Event()

        def run() -> None:  # a real camera never sends the same pixels twice
            i = 0
            while not self.stop.is_set():
                webrtc.send("capture", frames[i % len(frames)])
                i += 1
                self.stop.wait(0.03)

        self.thread = threading.Thread(target=run, daemon=True)

    def __enter__(self) -> Camera:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def test_capture_snapshot_and_burst_save_the_roi_crop_and_show_thumbnails(home, webrtc):
    from core.store.datasets import ToolDataset
    from core.store.tools import ROI

    tool = ToolStore(home).create("casting")
    tool.update(roi=ROI(0.25, 0.25, 0.5, 0.5))
    frame = read_image(casting_files("good", 1)[0])  # 300 x 300
    at = page("pages/1_Capture.py").run()
    no_errors(at)
    assert at.button(key="snapshot").disabled  # the camera is not started
    assert "Press START under the video" in texts(at)

    webrtc.playing = True
    at.run()
    shown = webrtc.send("capture", frame)
    assert not np.array_equal(shown, frame)  # the ROI box is drawn on the preview
    at.button(key="snapshot").click().run()
    no_errors(at)
    ds = ToolDataset(tool.images_dir, tool.config.classes)
    saved = ds.files("good")
    assert len(saved) == 1 and read_image(saved[0]).shape == (150, 150, 3)
    assert "Saved 1 photo(s) into 'good'" in texts(at) and "150x150 px, the ROI crop" in texts(at)

    with Camera(webrtc, [read_image(p) for p in casting_files("defect", 30)]):
        at.radio(key="capture_class").set_value("defect")
        at.number_input(key="burst_n").set_value(3)
        at.number_input(key="burst_dt").set_value(0.1)
        at.run()
        at.button(key="burst").click().run()
    no_errors(at)
    assert ds.counts() == {"good": 1, "defect": 3}
    assert {read_image(p).shape for p in ds.files("defect")} == {(150, 150, 3)}
    assert "Saved 3 photo(s) into 'defect'" in texts(at)
    assert at.radio(key="capture_class").value == "defect"  # the class stays chosen

    newest = sorted(ds.files(), key=lambda p: p.name)[-1]  # a wrong shot: delete its thumbnail
    at.button(key=f"thumb_delete::{newest.name}").click().run()
    no_errors(at)
    assert ds.counts() == {"good": 1, "defect": 2} and not newest.exists()
    assert f"Deleted a 'defect' photo ({newest.name})" in texts(at)


def test_capture_sets_the_roi_on_the_camera_picture_before_any_photo(home, webrtc, monkeypatch):
    from types import SimpleNamespace

    from core.store.tools import ROI

    ToolStore(home).create("casting")
    frame = np.full((480, 640, 3), 128, np.uint8)
    at = page("pages/1_Capture.py").run()
    no_errors(at)
    assert "Press START under the video: the ROI is drawn on the camera's picture" in texts(at)
    webrtc.playing = True
    at.run()
    webrtc.send("capture", frame)
    at.run()  # the ROI step takes the camera's picture to draw on
    no_errors(at)
    assert at.number_input(key="roi_w::casting").value == 640  # the saved ROI: the whole frame

    import streamlit_drawable_canvas  # only importable once a Streamlit runtime declared it

    drawn = {}
    dragged = {"objects": [{"type": "rect", "left": 100, "top": 60, "width": 150, "height": 120,
                            "scaleX": 1.2, "scaleY": 1}]}

    def canvas(**kwargs):
        """The engineer drags a box (Fabric.js reports it on the 400 x 300 canvas, after the
        shown ROI); from then on the canvas shows, and sends back, the drawing it is given."""
        first = not drawn
        drawn.update(kwargs)
        shown = kwargs["initial_drawing"]["objects"]
        return SimpleNamespace(json_data={"objects": shown + dragged["objects"] if first else shown})

    monkeypatch.setattr(streamlit_drawable_canvas, "st_canvas", canvas)
    at.run()
    no_errors(at)
    assert (drawn["width"], drawn["height"]) == (400, 300)
    assert drawn["initial_drawing"]["objects"][0]["width"] == 400  # the saved ROI is shown
    numbers = [at.number_input(key=f"roi_{k}::casting").value for k in "xywh"]
    assert numbers == [160, 96, 288, 192]  # the box in camera pixels (x 1.6)
    assert "Not saved yet" in texts(at) and ToolStore(home).get("casting").config.roi == ROI()

    at.number_input(key="roi_w::casting").set_value(300).run()  # fine-tuned with the numbers
    assert drawn["initial_drawing"]["objects"][0]["width"] == 188  # the canvas follows
    at.button(key="roi_save").click().run()
    no_errors(at)
    roi = ToolStore(home).get("casting").config.roi
    assert roi.to_pixels(640, 480) == (160, 96, 460, 288)
    assert "ROI of 'casting' saved: 300x192 px at x 160, y 96 of the 640x480 picture" in texts(at)


def test_capture_refuses_a_file_that_is_not_an_image(home):
    fill_tool(ToolStore(home), per_class=1)
    at = page("pages/1_Capture.py").run()
    at.file_uploader(key="upload_0").upload("broken.jpg", b"not a jpeg", "image/jpeg")
    at.run()
    at.button(key="upload_add").click().run()
    assert not at.exception
    assert "'broken.jpg' is not a readable image" in at.error[0].value


# ------------------------------------------------------------------ Labeling

def test_labeling_moves_and_deletes_selected_photos(home):
    tool = fill_tool(ToolStore(home), per_class=3)
    at = page("pages/2_Labeling.py").run()
    no_errors(at)
    good = [p for p in tool.images_dir.joinpath("good").iterdir()]
    assert len(at.checkbox) == 6

    at.checkbox(key=f"sel::{good[0]}").check()
    at.selectbox(key="label_move_to").select("defect")
    at.run()
    at.button(key="label_move").click().run()
    no_errors(at)
    assert (tool.images_dir / "defect" / good[0].name).is_file()
    assert "Moved 1 photo(s) to 'defect'" in texts(at)

    at.selectbox(key="label_filter").select("good").run()
    assert len(at.checkbox) == 2
    at.button(key="label_select_all").click().run()
    at.button(key="label_delete").click().run()
    assert len(list((tool.images_dir / "good").iterdir())) == 2  # not before confirming
    at.button(key="label_delete_yes").click().run()
    no_errors(at)
    assert list((tool.images_dir / "good").iterdir()) == []


def test_labeling_orders_hardest_first_with_the_model(trained_home):
    at = page("pages/2_Labeling.py").run()
    at.selectbox(key="label_order").select("hardest first (model)").run()
    no_errors(at)
    captions = [c.label for c in at.checkbox]
    assert len(captions) == 2 * PER_CLASS and all("defect " in c for c in captions)
    scores = [float(c.split("defect ")[1].split()[0]) for c in captions]
    threshold = ToolStore(trained_home).get("casting").config.threshold
    margins = [abs(s - threshold) for s in scores]
    wrong = [c for c in captions if "wrong side" in c]
    rest = margins[len(wrong):]  # after the wrong ones, the closest to the threshold first
    assert all(b >= a - 0.011 for a, b in zip(rest, rest[1:]))  # captions round to 0.01


# ------------------------------------------------------------------ Training

def test_training_page_lists_versions(trained_home):
    tool = ToolStore(trained_home).get("casting")
    first = tool.config.active_version
    meta = train_tool(tool, options=TrainingOptions(views_per_image=1, folds=2, seed=3,
                                                   activate=False))
    at = page("pages/3_Training.py").run()
    no_errors(at)
    table = at.dataframe[0].value
    assert table["Version"].tolist() == [meta.id, first]
    assert table["Active"].tolist() == ["", "yes"]
    assert at.selectbox(key="review::casting").value == meta.id
    assert any(m.label == "Suggested threshold" for m in at.metric)
    assert "At threshold **0.500** (its suggested threshold, which a trial runs it at)" in texts(at)
    assert not [b for b in at.button if b.key == "use_threshold"]  # not the active version
    assert f"{meta.id} starts at its suggested threshold 0.500" in texts(at)
    # running it as a trial, promoting it and rolling back: tests/test_live_page.py


def test_training_page_compares_a_retrain_with_the_active_version_before_serving(trained_home):
    tool = ToolStore(trained_home).get("casting")
    active = tool.config.active_version
    dataset = ToolDataset(tool.images_dir, tool.config.classes)
    for cls in ("good", "defect"):
        for path in casting_files(cls, 3, skip=PER_CLASS):
            dataset.add_file(cls, path.read_bytes(), path.name)
    meta = train_tool(tool, options=TrainingOptions(views_per_image=1, folds=2, activate=False))
    at = page("pages/3_Training.py").run()
    at.button(key="compare").click().run()
    no_errors(at)
    table = next(d.value for d in at.dataframe if "Misses" in d.value.columns)
    assert table["Version"].tolist() == [f"{meta.id} (new)", f"{active} (active)"]
    assert table["Misses"].str.endswith("of 3").all() and table["False rejects"].str.endswith("of 3").all()
    assert f"The same 6 photos for both: the 3 good and 3 defect photos {active} was not" in texts(at)
    assert ToolStore(trained_home).get("casting").config.active_version == active  # serves once promoted


def chart_marks(at: AppTest) -> dict[str, float]:
    """The thresholds the operating curve marks (its one chart's rules), by their label."""
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    (chart,) = at.get("vega_lite_chart")
    tables = [convert_arrow_bytes_to_pandas_df(d.data.data) for d in chart.proto.datasets]
    (marks,) = [t for t in tables if "mark" in t.columns]
    return dict(zip(marks["mark"], marks["threshold"]))


def test_training_page_shows_held_out_rates_and_saves_an_escape_rate_threshold(trained_home):
    tool = ToolStore(trained_home).get("casting")
    kept = tool.version_meta().validation.scores
    good, defect = np.array(kept["good"]), np.array(kept["defect"])
    assert (len(good), len(defect)) == (PER_CLASS, PER_CLASS)
    at = log_in(page("pages/3_Training.py"), "anna", "engineer", trained_home)  # for the audit
    no_errors(at)
    passed, caught = int((good < 0.5).sum()), int((defect >= 0.5).sum())
    shown = texts(at)
    assert "At threshold **0.500** (the tool's threshold):" in shown
    assert f"**Good parts passed:** {passed} of {PER_CLASS} (" in shown
    assert f"**Defects caught:** {caught} of {PER_CLASS} (" in shown
    assert "95 % range" in shown and "held-out photos of the training set" in shown.lower()
    assert "few dozen photos give wide ranges" in shown
    assert chart_marks(at)["threshold now"] == pytest.approx(0.5)

    at.number_input(key="escape::casting").set_value(0).run()  # no defect photo may pass
    no_errors(at)
    lowest = float(defect.min())  # the lowest defect photo must still FAIL
    assert lowest != pytest.approx(0.5)
    shown = texts(at)
    assert f"At most 0 % of defects may pass: threshold **{lowest:.3f}**" in shown
    assert f"**Defects caught:** {PER_CLASS} of {PER_CLASS} (100 %" in shown
    assert f"**Good parts passed:** {int((good < lowest).sum())} of {PER_CLASS} (" in shown
    assert chart_marks(at)["at most 0 % may pass"] == pytest.approx(lowest)

    at.button(key="use_threshold").click().run()
    no_errors(at)
    assert ToolStore(trained_home).get("casting").config.threshold == pytest.approx(lowest)
    assert f"Threshold of 'casting' set to {lowest:.3f} (was 0.500)" in texts(at)
    assert f"At threshold **{lowest:.3f}** (the tool's threshold):" in texts(at)
    assert at.button(key="use_threshold").disabled  # it is the threshold now
    assert live_station(trained_home).settings("casting").threshold == pytest.approx(lowest)  # the line's
    history = open_history(root=trained_home)
    assert history.recorder(load_settings(trained_home).name).flush(10)
    audit = history.changes()
    row = audit[audit["action"] == "threshold"].iloc[0]
    assert (row["tool"], row["actor"]) == ("casting", "anna")
    assert str(lowest)[:5] in str(row["details"]) and "0.5" in str(row["details"])


def test_training_page_refuses_an_escape_rate_threshold_from_too_few_defect_photos(trained_home):
    tool = ToolStore(trained_home).get("casting")
    meta_file = tool.version_dir() / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta["validation"]["scores"]["defect"] = meta["validation"]["scores"]["defect"][:4]
    meta_file.write_text(json.dumps(meta))
    at = page("pages/3_Training.py").run()
    no_errors(at)
    assert ("only 4 defect photo(s) were validated: choosing the threshold by the defects that "
            "may pass needs at least 5") in texts(at)
    assert not [b for b in at.button if b.key == "use_threshold"]

    del meta["validation"]["scores"]  # a version saved before held-out scores were kept
    meta_file.write_text(json.dumps(meta))
    tool.update(threshold=0.7)
    at.run()
    no_errors(at)
    confusion = meta["validation"]["confusion"]
    false_fail, missed = confusion["false_fail"], confusion["missed_defect"]
    shown = texts(at)
    assert ("At threshold **0.500** (the suggested one; this version kept no scores to show them "
            "at 0.700)") in shown
    assert f"**Good parts passed:** {PER_CLASS - false_fail} of {PER_CLASS} (" in shown
    assert f"**Defects caught:** {PER_CLASS - missed} of {PER_CLASS} (" in shown
    assert "saved before held-out scores were kept" in shown and not at.get("vega_lite_chart")
    assert "scored by " in shown and "at threshold 0.700" in shown  # new photos: as it judges


def test_training_page_tests_the_version_on_new_photos(trained_home):
    from core.engine.inference import TrainedModel

    tool = ToolStore(trained_home).get("casting")
    new_good = casting_files("good", 3, skip=40)
    new_defect = casting_files("defect", 3, skip=40)
    own = casting_files("good", 1)[0]  # one of the photos the tool was trained on
    at = page("pages/3_Training.py").run()
    no_errors(at)
    assert at.button(key="newphotos_score").disabled  # nothing uploaded yet
    at.radio(key="newphotos_class::casting").set_value("good")
    uploader = at.file_uploader(key="newphotos_0")
    for path in new_good:
        uploader.upload(path.name, path.read_bytes(), "image/jpeg")
    uploader.upload("broken.jpg", b"not a jpeg", "image/jpeg")
    uploader.upload(own.name, own.read_bytes(), "image/jpeg")
    at.run()
    at.button(key="newphotos_score").click().run()
    no_errors(at)
    warnings = [w.value for w in at.warning]
    assert any("'broken.jpg' is not a readable image" in w and "skipped" in w for w in warnings)
    assert any(f"'{own.name}' is one of the tool's own photos" in w for w in warnings)
    assert "on 3 new photo(s), never seen in training" in texts(at)
    assert "**Defects caught:** no defect photo tested yet" in texts(at)

    at.radio(key="newphotos_class::casting").set_value("defect")
    uploader = at.file_uploader(key="newphotos_1")  # the uploader was emptied
    for path in new_defect + new_good[:1]:  # a photo tested again counts once, as told last
        uploader.upload(path.name, path.read_bytes(), "image/jpeg")
    at.run()
    at.button(key="newphotos_score").click().run()
    no_errors(at)
    assert not at.warning or all("own photos" not in w.value for w in at.warning)
    scores = TrainedModel(tool).defect_scores([read_image(p) for p in new_good[1:] + new_defect
                                               + new_good[:1]])
    good, defect = scores[:2], scores[2:]
    shown = texts(at)
    assert "on 6 new photo(s), never seen in training" in shown
    assert f"**Good parts passed:** {int((good < 0.5).sum())} of 2 (" in shown
    assert f"**Defects caught:** {int((defect >= 0.5).sum())} of 4 (" in shown
    table = at.dataframe[-1].value
    assert sorted(table["Photo"]) == sorted(p.name for p in new_good + new_defect)
    assert table.set_index("Photo").loc[new_good[0].name, "Shows"] == "defect"  # as told last
    assert table["Defect score"].tolist() == pytest.approx(scores.round(3).tolist(), abs=1e-3)
    assert (table["Verdict"] == np.where(scores >= 0.5, "FAIL", "PASS")).all()
    assert dataset_counts(tool) == {"good": PER_CLASS, "defect": PER_CLASS}  # nothing added

    at.button(key="newphotos_clear").click().run()
    no_errors(at)
    assert "new photo(s), never seen in training" not in texts(at)


def dataset_counts(tool) -> dict[str, int]:
    from core.store.datasets import ToolDataset

    return ToolDataset(tool.images_dir, tool.config.classes).counts()


def test_training_page_of_an_anomaly_tool_without_defect_photos(home):
    from core.engine.anomaly import AnomalySettings
    from core.store.datasets import ToolDataset

    tool = ToolStore(home).create("cap", kind="anomaly", classes=("good",), allow_flips=True)
    dataset = ToolDataset(tool.images_dir, tool.config.classes)
    for path in casting_files("good", 6):
        dataset.add_file("good", path.read_bytes(), path.name)
    train_tool(tool, options=TrainingOptions(views_per_image=2, anomaly=AnomalySettings(
        memory_size=256, local_memory_size=256)))
    at = page("pages/3_Training.py").run()
    no_errors(at)
    shown = texts(at)
    assert "**Defects caught:** no defect photos: add some to measure how many defects are caught" in shown
    assert "**Good parts passed:** " in shown and " of 6 (" in shown
    assert "-." not in shown and "- ." not in shown
    assert not at.get("vega_lite_chart")  # no operating curve without defect scores
    assert not [b for b in at.button if b.key == "use_threshold"]
    assert "no defect photo was validated" in texts(at)
    assert [m.label for m in at.metric] == ["Threshold", "Suggested threshold"]
    assert at.dataframe[0].value["Defects caught"].tolist() == ["no defect photos"]
    caption = next(c.value for c in at.caption if c.value.startswith("Anomaly tool"))
    assert "two memories" in caption and "global" in caption and "local" in caption
    assert "memory_patches" not in caption and "best balance" not in caption

    at.radio(key="newphotos_class::cap").set_value("defect")  # a defect of any kind
    uploader = at.file_uploader(key="newphotos_0")
    for path in casting_files("defect", 2, skip=40):
        uploader.upload(path.name, path.read_bytes(), "image/jpeg")
    at.run()
    at.button(key="newphotos_score").click().run()
    no_errors(at)
    shown = texts(at)
    assert "**Defects caught:** " in shown and " of 2 (" in shown
    assert "**Good parts passed:** no good photo tested yet" in shown


def test_training_page_trains_in_the_background_without_activating(home):
    from core.station.jobs import job_for

    tool = fill_tool(ToolStore(home), per_class=5)
    at = page("pages/3_Training.py").run()
    no_errors(at)
    assert "No model yet." in texts(at)
    at.button(key="train_start").click().run()
    no_errors(at)
    job = job_for(tool)
    job.thread.join(timeout=TIMEOUT)
    assert job.error is None and job.meta is not None
    at.run()
    no_errors(at)
    assert f"Trained {job.meta.id}" in texts(at)
    assert at.dataframe[0].value["Version"].tolist() == [job.meta.id]
    assert ToolStore(home).get("casting").config.active_version is None  # engineer activates
    assert at.button(key="trial_start").label.startswith(f"Run {job.meta.id} as trial")


def test_training_page_says_when_uploaded_and_captured_photos_differ(home):
    from core.store.datasets import ToolDataset

    tool = fill_tool(ToolStore(home), per_class=5)  # uploaded 300 x 300 photos
    at = page("pages/3_Training.py").run()
    assert "All 10 photos were uploaded (300x300 px)" in [i.value for i in at.info][0]
    wide = read_image(casting_files("good", 1, skip=40)[0])
    ToolDataset(tool.images_dir, tool.config.classes).add_image("good", np.hstack([wide, wide]))
    at.run()
    no_errors(at)
    message = next(w.value for w in at.warning if "squeezed" in w.value)
    assert "the 1 'good' photo captured from the camera is 600x300 px (2.00)" in message


def test_training_page_refuses_too_few_photos(home):
    fill_tool(ToolStore(home), per_class=2)
    at = page("pages/3_Training.py").run()
    assert not at.exception
    assert any("capture 3 more 'good' image(s)" in w.value for w in at.warning)
    assert at.button(key="train_start").disabled


# ------------------------------------------------------------------ Live inspection and history

def test_home_binds_a_tool_to_a_camera_and_refuses_a_bad_name(home):
    ToolStore(home).create("alpha")
    at = page("Home.py").run()
    assert at.dataframe[0].value["Camera"].tolist() == ["0"]  # a new tool watches camera 0
    at.text_input(key="camera::alpha").input("top view").run()
    at.button(key="set_camera").click().run()
    no_errors(at)
    assert ToolStore(home).get("alpha").config.camera == "top view"
    assert at.dataframe[0].value["Camera"].tolist() == ["top view"]
    assert "**top view** (alpha)" in texts(at)

    at.text_input(key="camera::alpha").input("  ").run()
    at.button(key="set_camera").click().run()
    assert not at.exception and "camera name '' is not allowed" in at.error[0].value
    assert ToolStore(home).get("alpha").config.camera == "top view"


def test_roi_from_canvas_rectangle_scales_to_the_frame():
    import pages as ui

    drawing = {"objects": [{"type": "rect", "left": 160, "top": 60, "width": 320, "height": 240,
                            "scaleX": 1, "scaleY": 1}]}
    roi = ui.roi_from_canvas(drawing, (640, 360), (1280, 720))
    assert (roi.x, roi.y, roi.w, roi.h) == pytest.approx((0.25, 1 / 6, 0.5, 2 / 3))
    assert ui.roi_from_canvas({"objects": []}, (640, 360), (1280, 720)) is None




# ------------------------------------------------------------------ reading tools

def test_a_code_tool_is_set_up_on_the_training_page_and_needs_no_photos(home):
    ToolStore(home).create("serial", kind="code", roi=ROI(0.2, 0.2, 0.5, 0.4))  # Capture: photo step
    at = page("pages/3_Training.py").run()
    no_errors(at)
    assert not [b for b in at.button if b.key == "train_start"]  # set up, not trained
    at.text_input(key="expect_value::serial").input("4006381333931")
    at.button(key="setup_save").click().run()
    no_errors(at)
    tool = ToolStore(home).get("serial")
    assert tool.config.expect == {"mode": "exact", "value": "4006381333931"}
    assert [v.id for v in tool.versions()] == [tool.config.active_version]
    assert at.dataframe[0].value["Expects"].tolist() == ["'4006381333931'"]
    capture = page("pages/1_Capture.py").run()
    no_errors(capture)
    assert "A reading tool needs no photos" in texts(capture)
