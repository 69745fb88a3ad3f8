"""Issue 14: the engine on parts as a factory shows them, with real photos and real training.

Each test trains a small model on the fast profile; its bounds sit below figures measured over
several sample seeds (each test's docstring gives them).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from core.engine.anomaly import AnomalySettings
from core.engine.inference import TrainedModel
from core.engine.metrics import DECISION_POINT
from core.engine.training import TrainingOptions, train_tool
from core.store.datasets import LoadedImages, image_files, read_image
from core.store.tools import ToolStore
from tests.conftest import DATASETS, on_conveyor, sample_paths

SMALL = TrainingOptions(views_per_image=2, anomaly=AnomalySettings(memory_size=2048, local_memory_size=2048))


def good_only(images: list[np.ndarray], name: str) -> LoadedImages:
    return LoadedImages(list(images), [0] * len(images),
                        [Path(f"good/{name}-{i:03d}.png") for i in range(len(images))])


def anomaly_tool(name: str, images: list[np.ndarray]) -> tuple[TrainedModel, dict]:
    tool = ToolStore().create(name, kind="anomaly", classes=("good",), allow_flips=True)
    meta = train_tool(tool, good_only(images, name), SMALL)
    return TrainedModel(ToolStore().get(name)), meta


# --------------------------------------------------------------- a small part in a large frame

FRAME = (480, 640)  # the camera's frame, which is the tool's ROI
PART = 280  # the part's photo side in the frame: a disc of 0.47 of it, a sixth of the frame's area
BLOT = 16  # radius of the pasted blot: 12 % of the part's diameter, 1.5 % of its area


def part_in_frame(photo: np.ndarray, seed: int) -> tuple[np.ndarray, tuple[int, int]]:
    """A real part shrunk onto a plain grey conveyor (sensor noise, a little off centre) and
    where its centre is."""
    rng = np.random.default_rng(seed)
    frame = on_conveyor(cv2.resize(photo, (PART, PART), interpolation=cv2.INTER_AREA), FRAME, seed=seed)
    dy, dx = (int(v) for v in rng.integers(-20, 21, 2))
    return np.roll(frame, (dy, dx), axis=(0, 1)), (FRAME[1] // 2 + dx, FRAME[0] // 2 + dy)


def dark_blot(image: np.ndarray, centre: tuple[int, int], radius: int) -> np.ndarray:
    """A dark round blot with a one-pixel soft edge; the rest of the image untouched."""
    yy, xx = np.mgrid[:image.shape[0], :image.shape[1]]
    cover = np.clip(radius + 0.5 - np.hypot(xx - centre[0], yy - centre[1]), 0, 1)[..., None]
    return (image * (1 - cover) + 25 * cover).astype(np.uint8)


def spot_on_the_part(frame: np.ndarray, centre: tuple[int, int], turn: float) -> tuple[int, int]:
    """A place for the blot on the part, between a quarter and two fifths of the photo's side
    from its centre: of 48 places, the one whose surroundings are brightest, so that the blot is
    dark on the part, not laid on a shadow or the bottle's dark mouth."""
    darkest = frame.min(axis=2)
    best, where = -1, centre
    for radius in (0.28, 0.33, 0.38):
        for angle in np.linspace(0, 2 * np.pi, 16, endpoint=False) + turn:
            x = int(centre[0] + radius * PART * np.cos(angle))
            y = int(centre[1] + radius * PART * np.sin(angle))
            around = int(darkest[y - 2 * BLOT:y + 2 * BLOT + 1, x - 2 * BLOT:x + 2 * BLOT + 1].min())
            if around > best:
                best, where = around, (x, y)
    return where


def test_a_small_blot_on_a_small_part_is_found_where_it_is(workspace):
    """24 good bottles (real photos) shrunk into a 640x480 frame train the tool; on 10 other good
    bottles, a dark blot 32 px across (11 px of the 160x224 network input, about one stride-8
    cell) scores above every good bottle and the anomaly map peaks on it.

    Measured here: blotted 0.94 at the least, good 0.40 at most, peaks 4-24 px from the blots.
    Over sample seeds 0-6, 69 of 70 blots scored above every good bottle of their seed (one at
    0.21 against 0.44) and every peak lay within 28 px (bound: blot radius plus one cell, 40 px).
    A part half this size, or a blot of 14 px radius, is missed more often: see issue 14's report."""
    photos = [read_image(p) for p in sample_paths("mvtec_bottle", 34, seed=11)["good"]]
    frames = [part_in_frame(photo, seed=i) for i, photo in enumerate(photos)]
    model, meta = anomaly_tool("small part", [f for f, _ in frames[:24]])
    assert meta.details["input"] == {"height": 160, "width": 224}  # the frame's 4:3 kept
    held = frames[24:]
    good = model.defect_scores([f for f, _ in held])
    cell = FRAME[0] / (meta.details["input"]["height"] / 8)  # one stride-8 cell, in frame pixels
    scores, misses = [], []
    for k, (frame, centre) in enumerate(held):
        spot = spot_on_the_part(frame, centre, turn=k)
        explained = model.explain([dark_blot(frame, spot, BLOT)])[0]
        heat = cv2.resize(explained.heat, FRAME[::-1], interpolation=cv2.INTER_LINEAR)
        peak_y, peak_x = np.unravel_index(int(heat.argmax()), heat.shape)
        scores.append(explained.score)
        misses.append(float(np.hypot(peak_x - spot[0], peak_y - spot[1])))
    scores = np.array(scores)
    assert scores.min() > good.max(), f"blotted {np.round(scores, 3)}, good {np.round(good, 3)}"
    assert max(misses) <= BLOT + cell, f"map peak this far from the blot (px): {np.round(misses)}"


# --------------------------------------------------------------------- a long narrow part

TILE = 128  # a strip of four real bottle photos side by side: 128 x 512 px, 4:1


def strip_of(paths: list[Path]) -> np.ndarray:
    return np.hstack([cv2.resize(read_image(p), (TILE, TILE), interpolation=cv2.INTER_AREA) for p in paths])


def thin_crack(strip: np.ndarray, x: int, seed: int) -> np.ndarray:
    """A dark crack one pixel wide across the strip's short side (80 % of its height), wavering a
    little as cracks do, drawn at 4x and averaged down so its width is exact."""
    h, w = strip.shape[:2]
    rng = np.random.default_rng(seed)
    ys = np.arange(int(0.1 * h), int(0.9 * h))
    xs = x + np.cumsum(rng.normal(0, 0.3, len(ys)))
    fine = np.zeros((4 * h, 4 * w), np.uint8)
    cv2.polylines(fine, [np.stack([4 * xs, 4 * ys], 1).astype(np.int32)], False, 255, 4)
    cover = cv2.resize(fine, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)[..., None] / 255
    return (strip * (1 - 0.65 * cover)).astype(np.uint8)


def test_a_long_narrow_part_keeps_its_aspect_and_its_thin_crack(workspace):
    """A tool trained on 4:1 strips (four real bottles each) feeds them at 96x384, not squashed
    into the square; a 1-px crack across one bottle of a held-out strip fails every time and
    scores above every good strip. The same strips squashed into the square lose most cracks:
    the contrast the aspect buys.

    Measured here: cracked 0.73 at the least, good 0.35 at most; squashed, 2 of the 8 cracked
    strips FAIL. Over sample seeds 0-3: cracked 0.73-0.999 at the least, always all FAIL, good
    0.07-0.89 at most (a strip of four parts fails when any part looks unusual); squashed, 1-4
    of 8 FAIL (bound: at most 5, i.e. the square loses at least 3 of the cracks kept aspect finds)."""
    paths = sample_paths("mvtec_bottle", 4 * 28, seed=12)["good"]
    strips = [strip_of(paths[4 * i:4 * i + 4]) for i in range(28)]
    train, held = strips[:20], strips[20:]
    positions = [int(TILE * (0.3 + 0.4 * ((k * 0.37) % 1)) + TILE * (k % 4)) for k in range(len(held))]
    cracked = [thin_crack(s, x, seed=k) for k, (s, x) in enumerate(zip(held, positions))]

    model, meta = anomaly_tool("long part", train)
    assert meta.details["input"] == {"height": 96, "width": 384}  # 4:1 kept, at about the profile's area
    assert model.input_shape.width == 4 * model.input_shape.height
    good, bad = model.defect_scores(held), model.defect_scores(cracked)
    assert bad.min() > good.max(), f"cracked {np.round(bad, 3)}, good {np.round(good, 3)}"
    assert (bad >= DECISION_POINT).all()

    def squashed(images):
        return [cv2.resize(im, (192, 192), interpolation=cv2.INTER_AREA) for im in images]

    square, square_meta = anomaly_tool("squashed", squashed(train))
    assert square_meta.details["input"] == {"height": 192, "width": 192}
    lost = square.defect_scores(squashed(cracked))
    assert (lost >= DECISION_POINT).sum() <= len(cracked) - 3, f"squashed cracked {np.round(lost, 3)}"


# ---------------------------------------------------------------- several defect classes

DEFECT_CLASSES = ("blowhole", "break", "uneven")  # magnetic tiles: pits, a broken edge, a rough face


def test_a_multi_class_tool_names_the_defect_on_new_photos(workspace):
    """Trained on 20 real photos of each of three magnetic-tile defects and 20 good tiles, the
    tool gives the true class as the most likely one (so it fails the photo and names its defect)
    for a clear majority of 10 new photos of each defect: all of them, none picked as clearer.

    Measured here: 0.90 (blowhole 0.9, break 1.0, uneven 0.8); over sample seeds 0-3, 0.87-0.90,
    every class 0.7 or more. Bounds: 0.7 overall, 0.5 for each class."""
    classes = ("good", *DEFECT_CLASSES)
    rng = np.random.default_rng(0)
    train, held = LoadedImages(), LoadedImages()
    for label, name in enumerate(classes):
        files = image_files(DATASETS / "magnetic_tile" / "images" / name)
        for j, i in enumerate(rng.permutation(len(files))[:30]):
            into = train if j < 20 else held
            into.images.append(read_image(files[i]))
            into.labels.append(label)
            into.paths.append(files[i])
    tool = ToolStore().create("tiles", classes=classes, allow_flips=True)
    meta = train_tool(tool, train, TrainingOptions(views_per_image=2, folds=3))
    assert meta.classes == tuple(classes)
    model = TrainedModel(ToolStore().get("tiles"))
    probabilities = model.probabilities(held.images)
    truth = np.array(held.labels)
    named = probabilities.argmax(axis=1) == truth
    defect = truth != 0
    share = named[defect].mean()
    per_class = {name: named[truth == c].mean() for c, name in enumerate(classes) if c}
    assert share >= 0.7, f"defects failed and named right: {share:.2f} {per_class}"
    assert min(per_class.values()) >= 0.5, per_class


# ------------------------------------------------------------- the good-part pass rate

def test_thresholds_from_good_photos_pass_new_good_photos(workspace):
    """An anomaly tool trained on 30 good photos judges at 0.5, calibrated so that good parts
    almost never reach it (about 0.95 or more of them pass): on 100 held-out good photos of each
    of two sets, at least 0.9 of the 200 pass, and at least 0.85 of each set's.

    tests/test_anomaly.py checks 8 held-out bottles of a 10-photo tool at 0.75; this is the
    promised rate itself. Measured here: casting 0.93, mvtec_bottle 0.97; over sample seeds 0-2,
    casting 0.91-0.94 (short of the promise, see issue 14's report), mvtec_bottle 0.97-0.98."""
    passed = {}
    for dataset in ("casting", "mvtec_bottle"):
        picks = sample_paths(dataset, 130, seed=0)["good"]
        model, meta = anomaly_tool(dataset, [read_image(p) for p in picks[:30]])
        assert meta.suggested_threshold == DECISION_POINT
        scores = model.defect_scores([read_image(p) for p in picks[30:]])
        passed[dataset] = float((scores < DECISION_POINT).mean())
    assert np.mean(list(passed.values())) >= 0.9, passed
    assert min(passed.values()) >= 0.85, passed
