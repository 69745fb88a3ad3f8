"""Does the camera show the parts the way the tool's photos do? Framing checks in plain words.

A model trained on tight crops judges whatever the ROI shows: a looser ROI (more background),
another shape or another light makes good parts FAIL, and nothing says why. These checks compare
the tool's photos with the ROI of a camera frame, and the photos uploaded from elsewhere with
those captured from the camera (``core.datasets.from_camera``), and say what to do.

API (no Streamlit; call it from a page thread, never from the video thread):

    check_camera(tool: Tool, frame: np.ndarray, roi: ROI | None = None) -> list[Finding]
        The tool's photos against the ROI crop of one BGR camera frame (``roi``: the tool's own
        unless given, e.g. a ROI being drawn). Pixels: size, aspect, brightness, contrast; with
        an active model also the crop's distance to the nearest photo in the model's feature
        space (``TrainedModel.maps`` pooled by ``core.model.pool_features``). Cheap enough to call
        every few seconds: one crop and one backbone pass of one image (tens of ms on a CPU);
        the photos' side is computed once per set of photo files and model version, then cached.
    check_dataset(tool: Tool) -> list[Finding]
        Uploaded photos against photos captured from the camera (size, aspect, brightness,
        contrast), from the same cached summary: pixels only.

A ``Finding`` has a ``topic`` (one of ``TOPICS``) and a ``message`` that says what differs and
what to do. No finding means nothing to report (or no photos to compare with yet).
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core.datasets import from_camera, image_files, read_image
from core.errors import InspectorError
from core.inference import TrainedModel
from core.model import pool_features
from core.preprocessing import crop_roi
from core.tools import ROI, Tool

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
class PhotoGroup:
    """The tool's photos of one origin (uploaded, camera): how many per class, how they look."""

    origin: str
    per_class: dict[str, int]
    looks: Looks

    def name(self) -> str:
        """E.g. "the 30 uploaded 'good' photos" or "the 12 photos captured from the camera (...)"."""
        n = sum(self.per_class.values())
        classes = [c for c, k in self.per_class.items() if k]
        what = f"'{classes[0]}' photos" if len(classes) == 1 else "photos"
        if self.origin == UPLOADED:
            text = f"the {n} uploaded {what}"
        else:
            text = f"the {n} {what} captured from the camera"
        if len(classes) > 1:
            text += " (" + ", ".join(f"{k} '{c}'" for c, k in self.per_class.items() if k) + ")"
        return text


@dataclass(frozen=True)
class PhotoSummary:
    """A tool's photos summarised once: per origin, and (with a model) their pooled features."""

    groups: tuple[PhotoGroup, ...]
    model: TrainedModel | None = None  # the tool's active model, which gave the features
    features: np.ndarray | None = None  # (N, D) pooled features of the photos, unit length
    spacing: float = 0.0  # how far a photo is from its nearest other photo (90th percentile)


# ------------------------------------------------------------------ the photos' side (cached)

_cache: dict[Path, tuple[tuple, PhotoSummary]] = {}
_cache_lock = threading.Lock()


def _photo_files(tool: Tool) -> list[tuple[str, Path]]:
    found = [(c, p) for c in tool.config.classes for p in image_files(tool.images_dir / c)]
    if len(found) > MAX_PHOTOS:
        found = [found[i] for i in np.linspace(0, len(found) - 1, MAX_PHOTOS).round().astype(int)]
    return found


def _features(model: TrainedModel, images: list[np.ndarray]) -> np.ndarray:
    """Pooled features of ROI images under a model, each scaled to unit length."""
    pooled = np.concatenate([pool_features(model.maps(images[i:i + 16]))
                             for i in range(0, len(images), 16)])
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-9)


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine distances between rows of unit-length features. Measured on casting parts: unseen
    photos lie within the photos' own spacing, a ROI 30 % looser 1.6-2.3 times beyond it."""
    return 1.0 - a @ b.T


def summary(tool: Tool) -> PhotoSummary:
    """The tool's photos summarised, recomputed only when its photo files or model version change."""
    files = _photo_files(tool)
    key = (tool.config.active_version, tuple((c, p.name, p.stat().st_size) for c, p in files))
    with _cache_lock:
        cached = _cache.get(tool.folder)
    if cached is not None and cached[0] == key:
        return cached[1]
    loaded = [(c, p, read_image(p)) for c, p in files]
    loaded = [(c, p, im) for c, p, im in loaded if im is not None]
    groups = []
    for origin in (UPLOADED, CAMERA):
        mine = [(c, im) for c, p, im in loaded if from_camera(p) == (origin == CAMERA)]
        if mine:
            per_class = Counter(c for c, _ in mine)
            groups.append(PhotoGroup(origin, {c: per_class[c] for c in tool.config.classes},
                                     looks([im for _, im in mine])))
    found = PhotoSummary(tuple(groups))
    if tool.config.active_version and len(loaded) >= 3:
        model = TrainedModel(tool)
        features = _features(model, [im for _, _, im in loaded])
        distances = _distances(features, features)
        np.fill_diagonal(distances, np.inf)
        found = PhotoSummary(found.groups, model, features,
                             float(np.percentile(distances.min(1), 90)))
    with _cache_lock:
        _cache[tool.folder] = (key, found)
    return found


# ------------------------------------------------------------------ checks

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
    photos = summary(tool)
    now = _Side("the camera ROI", looks([crop]), plural=False)
    findings = []
    for group in photos.groups:
        advice = _AGAINST_CAPTURES if group.origin == CAMERA else _AGAINST_UPLOADS
        findings += _compare(_Side(group.name(), group.looks, plural=True), now, advice)
    if photos.model is not None and photos.spacing > 0:
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
    groups = {g.origin: g for g in summary(tool).groups}
    uploaded, camera = groups.get(UPLOADED), groups.get(CAMERA)
    if uploaded is None:
        return []
    if camera is None:
        n = sum(uploaded.per_class.values())
        return [Finding(ORIGIN, (
            f"All {n} photos were uploaded ({uploaded.looks.size}); none was captured from the "
            "camera. Check on the Capture page, camera running, that the ROI shows the parts as "
            "these photos do: the page says what differs."))]
    return _compare(_Side(uploaded.name(), uploaded.looks, plural=True),
                    _Side(camera.name(), camera.looks, plural=True), _MIXED_DATASET)


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
