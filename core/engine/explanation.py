"""Drawing what the engine decided onto the frame: ROI boxes, verdicts and Grad-CAM heatmaps."""

from __future__ import annotations

import cv2
import numpy as np

from core.records.verdicts import ERROR, FAIL, PASS

PASS_COLOUR = (60, 200, 60)  # BGR
FAIL_COLOUR = (40, 40, 230)
ERROR_COLOUR = (0, 150, 255)  # amber: the tool could not judge
IDLE_COLOUR = (200, 200, 200)


def heatmap_to_roi(heat: np.ndarray, width: int, height: int) -> np.ndarray:
    """Upsample a coarse evidence map to the ROI's pixel size, clipped to 0..1."""
    return np.clip(cv2.resize(heat.astype(np.float32), (width, height),
                              interpolation=cv2.INTER_LINEAR), 0.0, 1.0)


def blend_heatmap(image: np.ndarray, heat: np.ndarray, strength: float = 0.6) -> np.ndarray:
    """Colour the evidence over an image; where there is no evidence the image stays clear."""
    heat = heatmap_to_roi(heat, image.shape[1], image.shape[0])
    colours = cv2.applyColorMap(cv2.convertScaleAbs(heat, alpha=255), cv2.COLORMAP_JET)
    alpha = heat * strength
    return cv2.blendLinear(image, colours, 1.0 - alpha, alpha)


def draw_result(frame: np.ndarray, box: tuple[int, int, int, int], label: str, verdict: str,
                heat: np.ndarray | None = None, row: int = 0) -> None:
    """Draw one tool's ROI, heatmap and verdict onto ``frame`` in place; ``row`` stacks the
    labels of tools sharing a ROI corner instead of writing one over the other."""
    x0, y0, x1, y1 = box
    if heat is not None:
        frame[y0:y1, x0:x1] = blend_heatmap(frame[y0:y1, x0:x1], heat)
    colour = {PASS: PASS_COLOUR, FAIL: FAIL_COLOUR, ERROR: ERROR_COLOUR}.get(verdict, IDLE_COLOUR)
    thickness = max(2, frame.shape[1] // 320)
    cv2.rectangle(frame, (x0, y0), (x1 - 1, y1 - 1), colour, thickness)
    scale = max(0.5, frame.shape[1] / 900)
    (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    ty = y0 - 6 if y0 - th - base - 6 > 0 else min(frame.shape[0] - base, y0 + th + 6)
    ty = min(frame.shape[0] - base, ty + row * (th + base + 6))
    cv2.rectangle(frame, (x0, ty - th - 4), (x0 + tw + 8, ty + base), colour, -1)
    cv2.putText(frame, label, (x0 + 4, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                thickness, cv2.LINE_AA)
