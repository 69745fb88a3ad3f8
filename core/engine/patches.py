"""Local patches of feature maps, shared by the classifier's evidence map and the anomaly memory.

OpenCV rather than torch: on a busy 2-core CPU torch's threads spend longer waiting for each other
than computing such small maps. OpenCV filters at most 128 channels at once, so wider maps go
through in slices.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

_MAX_CHANNELS = 128  # OpenCV's limit for resize and blur


def _by_slices(cells: np.ndarray, operation: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply an OpenCV operation to (H, W, C) cells, at most 128 channels at a time."""
    if cells.shape[2] <= _MAX_CHANNELS:
        out = operation(cells)
        return out.reshape(*out.shape[:2], cells.shape[2])
    return np.concatenate([_by_slices(cells[:, :, i:i + _MAX_CHANNELS], operation)
                           for i in range(0, cells.shape[2], _MAX_CHANNELS)], axis=2)


def local_average(feature_map: np.ndarray, neighbourhood: int) -> np.ndarray:
    """(C, H, W) -> (H, W, C), each cell averaged over its neighbourhood (edges reflected)."""
    cells = np.ascontiguousarray(feature_map.transpose(1, 2, 0), np.float32)
    if neighbourhood <= 1:
        return cells
    return _by_slices(cells, lambda c: cv2.blur(c, (neighbourhood, neighbourhood),
                                                borderType=cv2.BORDER_REFLECT))


def on_grid(cells: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(h, w, C) cells bilinearly resized to (H, W, C) (half-pixel centres, edges clamped)."""
    if cells.shape[:2] == tuple(grid):
        return cells
    return _by_slices(np.ascontiguousarray(cells), lambda c: cv2.resize(
        c, (grid[1], grid[0]), interpolation=cv2.INTER_LINEAR))
