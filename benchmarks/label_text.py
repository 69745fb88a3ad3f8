"""Label text: reading the digits printed under the bars of real EAN-13 and UPC-A photos.

    python -m benchmarks.label_text

Every EAN-13 and UPC-A photo of ``../shared/datasets/zxing_barcodes`` (``labels.csv`` gives the
code's text, which is also printed under its bars) is checked with ``ExpectedText.exact(code)``
three ways:

- out of the box: RapidOCR's own settings (shorter side scaled to 736, 180-degree classifier)
  on the whole photo;
- the station's reader (``core.label_text.TextReader`` defaults) on the whole photo;
- the station's reader on a ROI around the printed digits, as an engineer draws it. No ROI is
  drawn in this set, so it is placed the same way on every photo: around the row of the
  whole-photo reading with the most digits (mostly digits, at least ``MIN_DIGITS``), widened by
  ``ROI_MARGIN`` of its size each side so that the smaller outer digits of the code are inside.
  Nothing of the expected text is used to place it; a photo with no such row counts as a miss.

Settings (the ROI reader's table in the section) were chosen on the tuned half only, whole
source folders (a folder is one contributor's series of the same products); the untuned half is
reported beside it.
"""

from __future__ import annotations

import argparse
import csv
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import DATASETS, machine, write_section
from core.label_text import ExpectedText, TextLine, TextReader, TextReading, normalise

SET = DATASETS / "zxing_barcodes"
SYMBOLOGIES = ("ean13", "upca")
TUNED_FOLDERS = ("ean13-1", "ean13-2", "ean13-5", "upca-2", "upca-4", "upca-6")
MIN_DIGITS = 6  # a row with fewer digits is not a code's printed number
DIGIT_SHARE = 0.8  # ... nor one where digits are fewer than this share of its characters
ROI_MARGIN = (0.3, 0.6)  # the ROI around the digit row, this share of its width and height each side:
# a UPC-A's smaller outer digits lie up to a quarter of its digit groups' width beyond them
SWEEP = ((480, 960, False), (736, 1280, False), (960, 1600, False), (736, 1280, True))  # TextReader(...)


@dataclass(frozen=True)
class Photo:
    path: Path
    code: str
    symbology: str
    tuned: bool


def photos() -> list[Photo]:
    """The EAN-13 and UPC-A photos and their codes, with the half each belongs to."""
    with open(SET / "labels.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["symbology"] in SYMBOLOGIES]
    return [Photo(SET / r["file"], r["text"], r["symbology"],
                  Path(r["file"]).stem.rsplit("_", 1)[0] in TUNED_FOLDERS) for r in rows]


def digit_row_roi(reading: TextReading, shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) around the row with the most digits, widened by ``ROI_MARGIN``."""
    def digits(row: tuple[TextLine, ...]) -> int:
        return sum(ch.isdigit() for line in row for ch in line.text)

    def share(row: tuple[TextLine, ...]) -> float:
        chars = sum(not ch.isspace() for line in row for ch in line.text)
        return digits(row) / max(chars, 1)

    rows = [row for row in reading.row_lines if digits(row) >= MIN_DIGITS and share(row) >= DIGIT_SHARE]
    if not rows:
        return None
    row = max(rows, key=digits)
    xs = [x for line in row for x, _ in line.box]
    ys = [y for line in row for _, y in line.box]
    width, height = max(xs) - min(xs), max(ys) - min(ys)
    dx, dy = ROI_MARGIN[0] * width, ROI_MARGIN[1] * height
    h, w = shape[:2]
    return (max(0, int(min(xs) - dx)), max(0, int(min(ys) - dy)),
            min(w, int(max(xs) + dx) + 1), min(h, int(max(ys) + dy) + 1))


@dataclass
class Outcome:
    passed: list[bool]  # the check's verdict: one row of the reading is the code
    found: list[bool]  # looser: the code is among the digits read, in reading order
    times_ms: list[float]


def read_whole(items: list[Photo], reader: TextReader) -> list[TextReading]:
    """Each photo read whole (the engine loaded first, so no time includes loading it)."""
    reader.read(np.full((64, 64, 3), 255, np.uint8))
    return [reader.read(cv2.imread(str(photo.path))) for photo in items]


def checked(items: list[Photo], readings: list[TextReading | None]) -> Outcome:
    """Each reading checked against its photo's code (``None``: no ROI could be placed)."""
    def found(photo: Photo, reading: TextReading) -> bool:
        return photo.code in "".join(ch for ch in normalise(reading.text, digits=True) if ch.isdigit())

    pairs = [(p, r) for p, r in zip(items, readings)]
    return Outcome([r is not None and ExpectedText.exact(p.code).check(r).passed for p, r in pairs],
                   [r is not None and found(p, r) for p, r in pairs],
                   [r.elapsed_ms for r in readings if r is not None])


def read_rois(items: list[Photo], whole: list[TextReading], reader: TextReader) -> list[TextReading | None]:
    """Each photo's digit-row ROI (placed from its whole reading) read by ``reader``."""
    reader.read(np.full((64, 64, 3), 255, np.uint8))
    readings = []
    for photo, reading in zip(items, whole):
        image = cv2.imread(str(photo.path))
        box = digit_row_roi(reading, image.shape)
        readings.append(None if box is None else reader.read(image[box[1]:box[3], box[0]:box[2]]))
    return readings


def share(flags: list[bool]) -> str:
    return f"{np.mean(flags):.2f} ({sum(flags)}/{len(flags)})"


def percentiles(times: list[float]) -> str:
    return f"{np.percentile(times, 50):.0f} / {np.percentile(times, 95):.0f}" if times else "-"


GROUPS = (("tuned half", lambda p: p.tuned), ("untuned half", lambda p: not p.tuned),
          ("EAN-13", lambda p: p.symbology == "ean13"), ("UPC-A", lambda p: p.symbology == "upca"),
          ("all", lambda p: True))


def results_table(items: list[Photo], methods: dict[str, Outcome], field: str) -> str:
    header = " | ".join(f"{label} ({sum(keep(p) for p in items)})" for label, keep in GROUPS)
    lines = [f"| method | {header} | p50 / p95 ms per read |", "|---" * (len(GROUPS) + 2) + "|"]
    for name, outcome in methods.items():
        flags = getattr(outcome, field)
        cells = " | ".join(share([f for f, p in zip(flags, items) if keep(p)]) for _, keep in GROUPS)
        lines.append(f"| {name} | {cells} | {percentiles(outcome.times_ms)} |")
    return "\n".join(lines)


def sweep_table(tuned: list[Photo], whole: list[TextReading]) -> str:
    """The ROI reader's settings compared on the tuned half."""
    lines = ["| short_side | long_side | turned_text | read right | code among the digits | p50 / p95 ms |",
             "|---|---|---|---|---|---|"]
    for short_side, long_side, turned in SWEEP:
        outcome = checked(tuned, read_rois(tuned, whole, TextReader(short_side, long_side, turned)))
        lines.append(f"| {short_side} | {long_side} | {turned} | {share(outcome.passed)} | "
                     f"{share(outcome.found)} | {percentiles(outcome.times_ms)} |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    started = time.time()
    items = photos()
    station = TextReader()
    whole = read_whole(items, station)
    tuned = [(p, r) for p, r in zip(items, whole) if p.tuned]
    sweep = sweep_table([p for p, _ in tuned], [r for _, r in tuned])
    methods = {
        "out of the box, whole photo": checked(items, read_whole(items, TextReader(None, turned_text=True))),
        "station reader, whole photo": checked(items, whole),
        "station reader, ROI around the digits": checked(items, read_rois(items, whole, station)),
    }
    roi = methods["station reader, ROI around the digits"]
    met = np.mean(roi.passed) >= 0.5 and np.percentile(roi.times_ms, 95) <= 300
    body = f"""## Label text: the digits under EAN-13 and UPC-A bars

Machine: {machine()}; shared with four other agents' work while measured (load average above
the core count), so times are inflated. `python -m benchmarks.label_text`
({time.time() - started:.0f} s). Each of the {len(items)} EAN-13 and UPC-A photos of
`zxing_barcodes` (240-512 px) is checked with `ExpectedText.exact(code)`. Tuned half: folders
{", ".join(TUNED_FOLDERS)} (settings chosen there); untuned half: the other folders (a folder is
one contributor's series of the same products, so no product is in both).

Read right (the check PASSes: one row of the reading, digit groups joined, is the code):

{results_table(items, methods, "passed")}

Code among the digits read (looser, the way the out-of-the-box figure of 0.31 was counted: every
digit of the reading in reading order, the code somewhere in them):

{results_table(items, methods, "found")}

The ROI is placed without the expected text: around the station's whole-photo reading's row
with the most digits (at least {MIN_DIGITS}, {DIGIT_SHARE:.0%} of its characters), widened by
{ROI_MARGIN[0]:.0%} of its width and {ROI_MARGIN[1]:.0%} of its height each side, as an engineer
draws it around the printed number; a photo without such a row counts as a miss. Times are one
`TextReader.read` (resize, detector, recogniser) of a photo or a ROI after the engine is loaded.
Target (ROI: read right >= 0.50, p95 <= 300 ms): **{"met" if met else "not met"}**.

What fails, seen in the readings: PP-OCRv4's detector never finds a UPC-A's two smaller outer
digits, printed apart beyond the guard bars (a 640 px crop with both plainly visible still gives
one box, the ten middle digits), so UPC-A is almost never read right by any method; on EAN-13
the centre guard bars reaching down between the digit groups are often read as an extra '1',
and the lone first digit is missed. Re-reading a ROI around the digit row is no better than the
whole photo here. A trial not kept (it needs the library's internals) widened each detected line
by one line height each side before recognition: the tuned half's ROI reads went from 0.12 to
0.20 at a 640 px longer side, the first EAN-13 digit found, UPC-A still not.

ROI reader settings on the tuned half (the station keeps short_side {station.short_side},
long_side {station.long_side}, no turned-text classifier). One choice saw both halves: the
shorter-side sizing replaced a 640 px longer side after a first run on all photos showed that
one reading fewer codes than the library's defaults on both halves (whole photo, read right:
tuned 0.16 against 0.20, untuned 0.13 against 0.17).

{sweep}
"""
    print(body)
    write_section("label-text", body)


if __name__ == "__main__":
    main()
