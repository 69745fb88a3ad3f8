"""From BGR pixels to network input: ROI crop, resize, normalisation, augmentation, TTA variants.

All of it is OpenCV and NumPy on uint8/float32 arrays, because the same code runs on the live
video thread where a frame must be ready in a few milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from core.store.tools import ROI

NORMALISED_STD = 51.0  # grey levels: a fifth of the range, so a normalised photo rarely clips
MAX_ASPECT = 4.0  # a longer ROI is taken as 4:1; its sides are still kept in proportion up to there
_STEP = 32  # the backbones' coarsest stride: each input side is a multiple of it
_SQUARE_WITHIN = 1.15  # an ROI this close to square is fed as the profile's square


@dataclass(frozen=True)
class InputShape:
    """The network input (height, width) a model was trained at, so live ROIs are fed alike.

    A long narrow part squashed into a square loses its thin cracks across the short side, so
    the input keeps the photos' aspect ratio at about the area of the profile's square (the
    same cost); near-square photos get exactly the profile's square.
    """

    height: int
    width: int

    @classmethod
    def keeping_aspect(cls, aspect: float, side: int) -> InputShape:
        """The shape for photos ``aspect`` = width / height wide, at the area of ``side`` squared."""
        aspect = float(np.clip(aspect, 1 / MAX_ASPECT, MAX_ASPECT))
        if abs(math.log(aspect)) <= math.log(_SQUARE_WITHIN):
            return cls(side, side)
        height = max(_STEP, int(round(side / math.sqrt(aspect) / _STEP)) * _STEP)
        width = max(_STEP, int(round(side * math.sqrt(aspect) / _STEP)) * _STEP)
        return cls(height, width)

    @classmethod
    def of_photos(cls, images: list[np.ndarray], side: int) -> InputShape:
        """The shape for a tool's photos: their median aspect ratio."""
        return cls.keeping_aspect(float(np.median([im.shape[1] / im.shape[0] for im in images])), side)

    @property
    def square(self) -> bool:
        return self.height == self.width

    def to_json(self) -> dict[str, int]:
        return {"height": self.height, "width": self.width}

    @classmethod
    def from_json(cls, data: Any, side: int) -> InputShape:
        """A version's stored shape; versions saved before shapes existed used the square."""
        if data is None:
            return cls(side, side)
        return cls(int(data["height"]), int(data["width"]))


def crop_roi(frame: np.ndarray, roi: ROI) -> np.ndarray:
    x0, y0, x1, y1 = roi.to_pixels(frame.shape[1], frame.shape[0])
    return frame[y0:y1, x0:x1]


def to_tensor(images: list[np.ndarray], shape: InputShape, mean: tuple[float, ...],
              std: tuple[float, ...]) -> np.ndarray:
    """BGR uint8 images -> normalised RGB float32 batch (N, 3, height, width)."""
    size = (shape.width, shape.height)
    resized = [cv2.resize(im, size, interpolation=cv2.INTER_AREA
                          if im.shape[0] > shape.height and im.shape[1] > shape.width
                          else cv2.INTER_LINEAR) for im in images]
    batch = cv2.dnn.blobFromImages(resized, 1.0 / 255.0, swapRB=True)
    batch -= np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    batch /= np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    return batch


def adjust_brightness(image: np.ndarray, gain: float, offset: float = 0.0) -> np.ndarray:
    return cv2.convertScaleAbs(image, alpha=gain, beta=offset)


def normalise_lighting(image: np.ndarray) -> np.ndarray:
    """The same mean brightness and contrast for every photo of a part.

    A memory of good patches takes a darker or flatter photo of a good part for an unusual one;
    a global change of light is not a defect, a local one is, and a local one survives this.
    """
    mean, std = float(image.mean()), float(image.std())
    gain = NORMALISED_STD / max(std, 1.0)
    table = np.clip((np.arange(256) - mean) * gain + 127.5, 0, 255).astype(np.uint8)
    return cv2.LUT(image, table)


def tta_variants(image: np.ndarray, variants: tuple[str, ...]) -> list[np.ndarray]:
    """The original ROI followed by each test-time variant, to classify in one batch."""
    makers = {
        "hflip": lambda im: cv2.flip(im, 1),
        "vflip": lambda im: cv2.flip(im, 0),
        "brighter": lambda im: adjust_brightness(im, 1.12, 8),
        "darker": lambda im: adjust_brightness(im, 0.88, -8),
    }
    return [image] + [makers[v](image) for v in variants]


def augment(image: np.ndarray, rng: np.random.Generator, allow_flips: bool) -> np.ndarray:
    """A plausible re-take of the same part: lighting, a small shift/rotation/zoom, some blur.

    Flips are used only when the tool says the part looks the same mirrored (not for text).
    """
    h, w = image.shape[:2]
    angle = rng.uniform(-8, 8)
    scale = rng.uniform(0.94, 1.06)
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    matrix[:, 2] += rng.uniform(-0.04, 0.04, 2) * (w, h)
    out = cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REFLECT_101)
    if allow_flips:
        if rng.random() < 0.5:
            out = cv2.flip(out, 1)
        if rng.random() < 0.5:
            out = cv2.flip(out, 0)
    gamma = rng.uniform(0.8, 1.25)
    table = np.clip(((np.arange(256) / 255.0) ** gamma) * 255, 0, 255).astype(np.uint8)
    out = adjust_brightness(cv2.LUT(out, table), rng.uniform(0.85, 1.15), rng.uniform(-15, 15))
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.3, 1.2))
    return out
