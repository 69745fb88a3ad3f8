"""Does the camera show the parts the way the tool's photos do? Framing checks in plain words.

A model trained on tight crops judges whatever the ROI shows: a looser ROI (more background),
another shape or another light makes good parts FAIL, and nothing says why. These checks compare
the tool's photos with the ROI of a camera frame, and the photos uploaded from elsewhere with
those captured from the camera (``core.store.datasets.from_camera``), and say what to do.

API (no Streamlit; call it from a page thread, never from the video thread):

    check_camera(tool: Tool, frame: np.ndarray, roi: ROI | None = None) -> list[Finding]
        The tool's photos against the ROI crop of one BGR camera frame (``roi``: the tool's own
        unless given, e.g. a ROI being drawn). Pixels: size, aspect, brightness, contrast; with
        an active model also the crop's distance to the nearest photo in the model's feature
        space (``TrainedModel.maps`` pooled by ``core.engine.model.pool_features``). Cheap enough to call
        every few seconds: one crop and one backbone pass of one image (tens of ms on a CPU);
        the photos' side (``photo_groups``, ``photo_features``) is computed once per set of
        photo files and model version, then cached (the first call reads the photos and, with
        a model, runs them through it: about a second for 60 photos).
    check_dataset(tool: Tool) -> list[Finding]
        Uploaded photos against photos captured from the camera (size, aspect, brightness,
        contrast), from the cached ``photo_groups``: pixels only, no model loaded.

    FramingWatch(every_s: float = WATCH_EVERY_S)
        ``check_camera`` for the tools running on the line, throttled: ``findings(tool, frames,
        roi)`` checks the latest frame of a ``core.station.live.FrameHolder`` at most once every
        ``every_s`` seconds per tool (at once when its ROI or model changes) and otherwise
        returns the last findings, so every page showing a camera may ask on each refresh. It
        runs on the asking page's thread; the video thread never waits for it.

A ``Finding`` has a ``topic`` (one of ``TOPICS``) and a ``message`` that says what differs and
what to do. No finding means nothing to report (or no photos to compare with yet).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core.engine.inference import TrainedModel
from core.engine.kinds import get_kind
from core.engine.model import pool_features
from core.engine.preprocessing import crop_roi
from core.errors import InspectorError
from core.store.datasets import from_camera, image_files, read_image
from core.store.tools import ROI, Tool

LOG = logging.getLogger("shopfloor_inspector.framing")

SIZE, ASPECT, BRIGHTNESS, CONTRAST, FEATURES, ORIGIN = (
    "size", "aspect", "brightness", "contrast", "features", "origin")
TOPICS = (SIZE, ASPECT, BRIGHTNESS, CONTRAST, FEATURES, ORIGIN)
UPLOADED, CAMERA = "uploaded", "camera"  # where photos came from

SIZE_TOLERANCE = 0.25  # the ROI's side may be 25 % longer or shorter than the photos'
ASPECT_TOLERANCE = 0.12  # width/height 12 % off: the part looks stretched in the square input
BRIGHTNESS_TOLERANCE = 20.0  # mean grey levels (of 255)
CONTRAST_TOLERANCE = 1.35  # ratio of the grey-level spreads, either way
FEATURE_TOLERANCE = 1.5  # the crop's distance to the nearest photo / the photos' own spacing
MAX_PHOTOS = 120  # photos summarised per tool (evenly spread): bounds the first call's cost
_STATS_SIDE = 256  # images are shrunk to this for brightness and contrast (same figures, faster)
WATCH_EVERY_S = 5.0  # a running tool's framing is checked on one frame this often
WATCH_FRESH_S = 3.0  # ... if the camera sent it this recently (else nothing is checked)


@dataclass(frozen=True)
class Finding:
    """One thing that differs between the photos and what the camera shows, and what to do."""

    topic: str
    message: str


@dataclass(frozen=True)
class Looks:
    """What some images look like in pixels: medians over the images."""

    count: int
    width: int
    height: int
    brightness: float  # mean grey level, 0..255
    contrast: float  # standard deviation of the grey levels

    @property
    def aspect(self) -> float:
        return self.width / self.height

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height} px"


def looks(images: list[np.ndarray]) -> Looks:
    """The median size, brightness and contrast of BGR images."""
    grey = [cv2.cvtColor(_shrunk(im), cv2.COLOR_BGR2GRAY) for im in images]
    return Looks(len(images), int(np.median([im.shape[1] for im in images])),
                 int(np.median([im.shape[0] for im in images])),
                 float(np.median([g.mean() for g in grey])), float(np.median([g.std() for g in grey])))


def _shrunk(image: np.ndarray) -> np.ndarray:
    scale = _STATS_SIDE / max(image.shape[:2])
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image


@dataclass(frozen=True)
class _Side:
    """One side of a comparison, named for a sentence: "the camera ROI", "the 30 uploaded..."."""

    name: str
    looks: Looks
    plural: bool

    @property
    def Name(self) -> str:  # noqa: N802 - the name at the start of a sentence
        return self.name[0].upper() + self.name[1:]

    @property
    def are(self) -> str:
        return "are" if self.plural else "is"


@dataclass(frozen=True)
class PhotoGroup:
    """The tool's photos of one origin (uploaded, camera): how many per class, how they look."""

    origin: str
    per_class: dict[str, int]
    looks: Looks

    @property
    def count(self) -> int:
        return sum(self.per_class.values())

    def name(self) -> str:
        """E.g. "the 30 uploaded 'good' photos" or "the 12 photos captured from the camera (...)"."""
        classes = [c for c, k in self.per_class.items() if k]
        photos = "photo" if self.count == 1 else "photos"
        what = f"'{classes[0]}' {photos}" if len(classes) == 1 else photos
        text = (f"the {self.count} uploaded {what}" if self.origin == UPLOADED
                else f"the {self.count} {what} captured from the camera")
        if len(classes) > 1:
            text += " (" + ", ".join(f"{k} '{c}'" for c, k in self.per_class.items() if k) + ")"
        return text

    def side(self) -> _Side:
        return _Side(self.name(), self.looks, plural=self.count != 1)


@dataclass(frozen=True)
class PhotoFeatures:
    """Where a tool's photos lie in its active model's pooled feature space."""

    model: TrainedModel
    features: np.ndarray  # (N, D) pooled features of the photos, unit length
    spacing: float  # how far a photo is from its nearest other photo (90th percentile)


# ------------------------------------------------------------------ the photos' side (cached)

_cache: dict[tuple[Path, str], tuple[tuple, object]] = {}
_cache_lock = threading.Lock()


def _cached(tool: Tool, what: str, make):
    """``make(files)`` for the tool's photo files, recomputed only when the files (or, for the
    features, the active model version) change."""
    files = [(c, p) for c in tool.config.classes for p in image_files(tool.images_dir / c)]
    if len(files) > MAX_PHOTOS:
        files = [files[i] for i in np.linspace(0, len(files) - 1, MAX_PHOTOS).round().astype(int)]
    key = (tool.config.active_version, tuple((c, p.name, p.stat().st_size) for c, p in files))
    with _cache_lock:
        cached = _cache.get((tool.folder, what))
    if cached is not None and cached[0] == key:
        return cached[1]
    value = make(files)
    with _cache_lock:
        _cache[(tool.folder, what)] = (key, value)
    return value


def photo_groups(tool: Tool) -> tuple[PhotoGroup, ...]:
    """The tool's photos per origin (uploaded, camera): pixels only, no model needed."""
    def make(files: list[tuple[str, Path]]) -> tuple[PhotoGroup, ...]:
        groups = []
        for origin in (UPLOADED, CAMERA):
            mine = [(c, read_image(p)) for c, p in files if from_camera(p) == (origin == CAMERA)]
            mine = [(c, im) for c, im in mine if im is not None]
            if mine:
                per_class = Counter(c for c, _ in mine)
                groups.append(PhotoGroup(origin, {c: per_class[c] for c in tool.config.classes},
                                         looks([im for _, im in mine])))
        return tuple(groups)

    return _cached(tool, "groups", make)


def photo_features(tool: Tool) -> PhotoFeatures | None:
    """The tool's photos under its active model (None without a model, for a kind that reads its
    ROI without a backbone, or with under 3 photos)."""
    def make(files: list[tuple[str, Path]]) -> PhotoFeatures | None:
        images = [im for im in (read_image(p) for _, p in files) if im is not None]
        if not tool.config.active_version or not get_kind(tool.config.kind).neural or len(images) < 3:
            return None
        model = TrainedModel(tool)
        features = _features(model, images)
        distances = _distances(features, features)
        np.fill_diagonal(distances, np.inf)
        return PhotoFeatures(model, features, float(np.percentile(distances.min(1), 90)))

    return _cached(tool, "features", make)


def _features(model: TrainedModel, images: list[np.ndarray]) -> np.ndarray:
    """Pooled features of ROI images under a model, each scaled to unit length."""
    pooled = np.concatenate([pool_features(model.maps(images[i:i + 16]))
                             for i in range(0, len(images), 16)])
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-9)


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine distances between rows of unit-length features. Measured on casting parts: unseen
    photos lie within the photos' own spacing, a ROI 30 % looser 1.6-2.3 times beyond it."""
    return 1.0 - a @ b.T


# ------------------------------------------------------------------ checks

@dataclass(frozen=True)
class _Advice:
    framing: str  # what to do when the frame differs (size, aspect, features)
    light: str  # what to do when the light differs (brightness, contrast)


_FROM_CAMERA = "capture the photos from the camera"
_AGAINST_UPLOADS = _Advice(f"Redraw the ROI to frame the part as the photos do, or {_FROM_CAMERA}.",
                           f"Set the light and the camera's exposure as for the photos, or {_FROM_CAMERA}.")
_AGAINST_CAPTURES = _Advice(
    "The ROI or the camera moved since they were taken: set the ROI back, or capture them again.",
    "The light changed since they were taken: set it back, or capture them again.")
_MIXED_DATASET = _Advice(
    "The model learns two framings and the camera shows only one: capture all the photos from "
    "the camera (delete the uploaded ones on the Labeling page), or redraw the ROI on the Capture "
    "page to frame the part as the uploaded ones do and capture again.",
    "The model learns two lightings and the camera shows only one: capture all the photos from "
    "the camera, or set the light as for the uploaded ones.")


def check_camera(tool: Tool, frame: np.ndarray, roi: ROI | None = None) -> list[Finding]:
    """What differs between the tool's photos and the ROI crop of a BGR camera frame."""
    if frame is None or frame.ndim != 3 or frame.size == 0:
        raise InspectorError("no camera frame to check the framing on: start the camera first")
    crop = crop_roi(frame, roi or tool.config.roi)
    now = _Side("the camera ROI", looks([crop]), plural=False)
    findings = []
    for group in photo_groups(tool):
        advice = _AGAINST_CAPTURES if group.origin == CAMERA else _AGAINST_UPLOADS
        findings += _compare(group.side(), now, advice)
    photos = photo_features(tool)
    if photos is not None and photos.spacing > 0:
        nearest = float(_distances(_features(photos.model, [crop]), photos.features).min())
        ratio = nearest / photos.spacing
        if ratio > FEATURE_TOLERANCE:
            findings.append(Finding(FEATURES, (
                f"To the model ({photos.model.version}) the camera ROI looks unlike the tool's "
                f"photos: {ratio:.1f} times farther from the nearest one than the photos are "
                "from each other, so its verdicts on this view mean little. Frame the part as "
                "the photos show it (as tight, as centred, the same light), or "
                f"{_FROM_CAMERA} and train again.")))
    return findings


def check_dataset(tool: Tool) -> list[Finding]:
    """What differs between the tool's uploaded photos and those captured from its camera."""
    groups = {g.origin: g for g in photo_groups(tool)}
    uploaded, camera = groups.get(UPLOADED), groups.get(CAMERA)
    if uploaded is None:
        return []
    if camera is None:
        which = (f"All {uploaded.count} photos were" if uploaded.count > 1
                 else "The only photo was")
        return [Finding(ORIGIN, (
            f"{which} uploaded ({uploaded.looks.size}); none was captured from the camera. Check "
            "on the Capture page, camera running, that the ROI shows the parts as these photos "
            "do: the page says what differs."))]
    return _compare(uploaded.side(), camera.side(), _MIXED_DATASET)


def _compare(ref: _Side, other: _Side, advice: _Advice) -> list[Finding]:
    """Findings where ``other`` looks unlike ``ref`` beyond the tolerances."""
    a, b = ref.looks, other.looks
    found = []
    scale = float(np.sqrt(b.width * b.height / (a.width * a.height)))
    if abs(scale - 1) > SIZE_TOLERANCE:
        larger = scale > 1
        found.append(Finding(SIZE, (
            f"{ref.Name} {ref.are} {a.size}; {other.name} {other.are} {b.size}, "
            f"{scale if larger else 1 / scale:.1f} times {'larger' if larger else 'smaller'}: at "
            f"the same scale {other.name} {'show' if other.plural else 'shows'} "
            f"{'more' if larger else 'less'} around the part. {advice.framing}")))
    stretch = b.aspect / a.aspect
    if abs(stretch - 1) > ASPECT_TOLERANCE:
        found.append(Finding(ASPECT, (
            f"{ref.Name} {ref.are} {a.size} (width/height {a.aspect:.2f}); {other.name} "
            f"{other.are} {b.size} ({b.aspect:.2f}). Each is squeezed into the model's square "
            f"input, so the part looks {'wider' if stretch > 1 else 'taller'} than in the photos "
            f"it learnt from. {advice.framing}")))
    shift = b.brightness - a.brightness
    if abs(shift) > BRIGHTNESS_TOLERANCE:
        found.append(Finding(BRIGHTNESS, (
            f"{other.Name} {other.are} {'brighter' if shift > 0 else 'darker'} (mean grey level "
            f"{b.brightness:.0f} of 255) than {ref.name} ({a.brightness:.0f}). "
            f"{advice.light}")))
    spread = b.contrast / max(a.contrast, 1e-6)
    if spread > CONTRAST_TOLERANCE or spread < 1 / CONTRAST_TOLERANCE:
        found.append(Finding(CONTRAST, (
            f"{other.Name} {'have' if other.plural else 'has'} {'more' if spread > 1 else 'less'} "
            f"contrast (grey-level spread {b.contrast:.0f}) than {ref.name} ({a.contrast:.0f}): "
            "more or less background, another light or focus. "
            f"{advice.light}")))
    return found


# ------------------------------------------------------------------ watching the line's cameras

@dataclass(frozen=True)
class _Checked:
    key: tuple  # what the findings depend on besides the frame: photos' tool, model, ROI
    at: float  # time.monotonic() of the check
    findings: tuple[Finding, ...]


class FramingWatch:
    """``check_camera`` on one frame every ``every_s`` seconds per running tool, whoever asks."""

    def __init__(self, every_s: float = WATCH_EVERY_S, check=None):
        self.every_s = every_s
        self._check = check or check_camera
        self._lock = threading.Lock()
        self._checked: dict[str, _Checked] = {}
        self.checks = 0  # how many times a frame was checked (for tests and the curious)

    def findings(self, tool: Tool, frames, roi: ROI | None = None,
                 now: float | None = None) -> list[Finding] | None:
        """The tool's latest framing findings (checked now if due), or None before a first
        check (no fresh frame yet). ``frames`` is a ``core.station.live.FrameHolder``; ``now`` is on its
        monotonic clock."""
        now = time.monotonic() if now is None else now
        roi = roi or tool.config.roi
        key = (str(tool.folder), tool.config.active_version, roi)
        with self._lock:
            last = self._checked.get(tool.name)
            due = last is None or last.key != key or now - last.at >= self.every_s
            fresh = frames.stamp and now - frames.stamp <= WATCH_FRESH_S
            if not fresh:
                return None  # the camera sends nothing: nothing to say about its framing
            if not due:
                return list(last.findings)
            # claimed: another page asking meanwhile gets the previous findings
            self._checked[tool.name] = _Checked(key, now, last.findings if last else ())
        frame = frames.get()
        try:
            found = tuple(self._check(tool, frame, roi)) if frame is not None else ()
        except InspectorError as exc:
            LOG.info("framing check of '%s' skipped: %s", tool.name, exc)
            found = ()
        except Exception:  # noqa: BLE001 - a hint must never break the page
            LOG.exception("framing check of '%s' failed", tool.name)
            found = ()
        with self._lock:
            self._checked[tool.name] = _Checked(key, now, found)
            self.checks += 1
        return list(found)

    def forget(self, name: str) -> None:
        with self._lock:
            self._checked.pop(name, None)
