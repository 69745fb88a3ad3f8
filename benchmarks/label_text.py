"""Label text: reading the digits printed under the bars of real EAN-13 and UPC-A photos.

    python -m benchmarks.label_text [--digits-only]

(``--digits-only``: only the printed-digits part of the section is measured again and replaced.)

Every EAN-13 and UPC-A photo of ``../shared/datasets/zxing_barcodes`` (``labels.csv`` gives the
code's text, which is also printed under its bars) is checked with ``ExpectedText.exact(code)``
four ways:

- out of the box: RapidOCR's own settings (shorter side scaled to 736, 180-degree classifier)
  on the whole photo;
- the station's reader (``core.engine.label_text.TextReader`` defaults) on the whole photo;
- the printed digits read from the code's position (``core.engine.label_text.find_retail_code`` then
  ``read_printed_digits``: the HRI check, the digits under the bars against what the bars say),
  the digit band placed from where zxing finds the code, never from its text; a photo where no
  EAN/UPC is found counts as a miss;
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
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import DATASETS, REPORT, machine, write_section
from core.engine.label_text import (
    ExpectedText,
    PrintedDigitsOptions,
    TextLine,
    TextReader,
    TextReading,
    find_retail_code,
    normalise,
    read_printed_digits,
)

SET = DATASETS / "zxing_barcodes"
SYMBOLOGIES = ("ean13", "upca")
TUNED_FOLDERS = ("ean13-1", "ean13-2", "ean13-5", "upca-2", "upca-4", "upca-6")
MIN_DIGITS = 6  # a row with fewer digits is not a code's printed number
DIGIT_SHARE = 0.8  # ... nor one where digits are fewer than this share of its characters
ROI_MARGIN = (0.3, 0.6)  # the ROI around the digit row, this share of its width and height each side:
# a UPC-A's smaller outer digits lie up to a quarter of its digit groups' width beyond them
# read_printed_digits's options compared on the tuned half (the first is the default kept)
DIGITS_SWEEP = (
    ("kept: one 12-module band from half a module above the bars' end (the earlier of their "
     "columns' first light pixel and their pattern's end, a curve), both decoders, no whitening", {}),
    ("per-cell decoder only", {"decoders": ("cells",)}),
    ("CTC held to the digit count only", {"decoders": ("ctc",)}),
    ("guard bars' runs from the band's top whitened", {"whiten": "from top"}),
    ("guard bars' whole columns whitened", {"whiten": "columns"}),
    ("code ends set on the outer guard bars", {"refine_ends": True}),
    ("bars' end: their columns' first light pixel only", {"bars_end_rule": "light"}),
    ("bars' end: their pattern's end only", {"bars_end_rule": "correlation"}),
    ("bars' end against the neighbourhood (adaptive)", {"adaptive_bars_end": True}),
    ("bars' end one straight line", {"bars_end_degree": 1}),
    ("bars' end one row", {"bars_end_degree": 0}),
    ("band from 1 module above the bars' end", {"band_offsets": (-1.0,)}),
    ("band from the bars' end", {"band_offsets": (0.0,)}),
    ("two bands, 10 and 14 modules high", {"band_heights": (10.0, 14.0)}),
    ("two bands, from 2 above and at the bars' end", {"band_offsets": (-2.0, 0.0)}),
)
# earlier defaults, each read once on the untuned half before the next was chosen on the tuned one
EARLIER_DEFAULTS = (
    ("first default: guard bars' runs whitened, ends set on the guards, bars' end by light, "
     "band from 1 above", {"whiten": "from top", "refine_ends": True, "bars_end_rule": "light",
                           "band_offsets": (-1.0,)}),
    ("second default: as the first, no whitening, zxing's ends",
     {"bars_end_rule": "light", "band_offsets": (-1.0,)}),
)
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


def located(items: list[Photo]) -> tuple[list, list[float]]:
    """Each photo's EAN/UPC as ``find_retail_code`` finds it (None: not found), and the times."""
    codes, times = [], []
    for photo in items:
        image = cv2.imread(str(photo.path))
        started = time.perf_counter()
        codes.append(find_retail_code(image))
        times.append((time.perf_counter() - started) * 1000)
    return codes, times


def read_digits(items: list[Photo], codes: list, options: PrintedDigitsOptions | None = None
                ) -> list[TextReading | None]:
    """Each photo's printed digits read from its code's position (None: no code found)."""
    options = options or PrintedDigitsOptions()
    warm = next((i for i, code in enumerate(codes) if code is not None), None)
    if warm is not None:  # the recogniser loaded first, so no time includes loading it
        read_printed_digits(cv2.imread(str(items[warm].path)), codes[warm], options)
    return [None if code is None else read_printed_digits(cv2.imread(str(photo.path)), code, options)
            for photo, code in zip(items, codes)]


def digits_block(items: list[Photo]) -> str:
    """The printed-digits part of the section: its results on both halves and its options."""
    started = time.time()
    codes, locate_ms = located(items)
    outcome = checked(items, read_digits(items, codes))
    method = {"printed digits from the code's position (kept)": outcome}
    for name, changes in EARLIER_DEFAULTS:
        method[name] = checked(items, read_digits(items, codes, PrintedDigitsOptions(**changes)))
    tuned = [(p, c) for p, c in zip(items, codes) if p.tuned]
    lines = ["| options (tuned half, 50 photos) | read right | p50 / p95 ms |", "|---|---|---|"]
    for name, changes in DIGITS_SWEEP:
        options = PrintedDigitsOptions(**changes)
        half = [p for p, _ in tuned]
        swept = checked(half, read_digits(half, [c for _, c in tuned], options))
        lines.append(f"| {name} | {share(swept.passed)} | {percentiles(swept.times_ms)} |")
        print(lines[-1], flush=True)
    met = np.mean(outcome.passed) >= 0.5 and np.percentile(outcome.times_ms, 95) <= 300
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    found = [c is not None for c in codes]
    right, least = sum(outcome.passed), math.ceil(len(items) / 2)
    lost = sum(p.tuned and not f for p, f in zip(items, found))
    return f"""<!-- printed-digits -->
### Printed digits read from the code's position (HRI check)

`find_retail_code` + `read_printed_digits` (`core/engine/label_text.py`), measured
{time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())} in {time.time() - started:.0f} s, load
average {load} on the 2 cores while measured (other work running), so times are inflated.
The code is found by zxing (`core.engine.codes.read_codes`, retried on a CLAHE copy and on the image
scaled up 1.5 and 2 times): {share(found)} of the photos (tuned
{share([f for f, p in zip(found, items) if p.tuned])}, untuned
{share([f for f, p in zip(found, items) if not p.tuned])}), p50 / p95
{percentiles(locate_ms)} ms; a photo where it is not found counts as a miss. Only the code's
symbology and corners are used, never its text. The code is rectified on its module grid (its
corners' perspective), the end of the bars is found per bar column and fitted as a curve (a
can, a bent pack), the band below it follows that curve, and one PP-OCRv4 recogniser call (its
ONNX session run directly, its step probabilities kept for the blank and the ten digits) reads
it.
Two decoders use the known layout: each digit cell's likeliest digit among the steps within its
columns, and the likeliest CTC path spelling exactly the code's 13 (12) digits; the reading
whose check digit holds is kept, else the surer. Times: one `read_printed_digits` (locating
not included). In the station this is the `digits` kind (`core/engine/kinds/digits.py`): a
tool whose ROI holds the code and the digits under it, checked like label text.

{results_table(items, method, "passed")}

Code among the digits read: {share(outcome.found)}.

Target (read right >= 0.50, p95 <= 300 ms per ROI): **{"met" if met else "not met"}**
({np.mean(outcome.passed):.2f}, p95 {np.percentile(outcome.times_ms, 95):.0f} ms), narrowly: {right} of
the {len(items)} photos read right where {least} is the least that meets it, and the untuned half alone reads
{share([f for f, p in zip(outcome.passed, items) if not p.tuned])}; the earlier defaults below
moved the total by one or two photos either way.

What still fails, seen in the tuned half's readings: the code not found at all ({lost} of its 50
photos, where zxing finds no EAN/UPC even retried; these count as misses); the bars' end found
too high or sloping on a tilted or glossy print, so the band holds bars, read as a run of 1s
and 0s (most of the rest, at a confidence under 0.1); the long bars of a UPC-A's first and
last characters read as an extra '1' beside the small outer digits; digits cut or hidden on a
bent pack. The first digits of EAN-13, lost by the detector above, are read here.

Options compared on the tuned half only, and chosen there. The untuned half was read with each
default in turn (all three in the table above), once each, before the next was chosen on the
tuned half; each change won by one to three tuned photos, differences this small set cannot
tell from chance. Before them, the first prototype (the code squared to its axis, one straight
bars' end where their pattern stopped, the per-cell decoder alone, the guard bars' columns
whitened, no retried zxing) was run once on all photos: tuned 12/50, untuned 23/53.

{chr(10).join(lines)}
<!-- /printed-digits -->"""


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits-only", action="store_true",
                        help="measure the printed digits only and replace that part of the section")
    args = parser.parse_args()
    started = time.time()
    items = photos()
    digits = digits_block(items)
    print(digits, flush=True)
    if args.digits_only:
        section = re.search(r"<!-- label-text -->\n(.*?)<!-- /label-text -->", REPORT.read_text(), re.S)
        body = section.group(1) if section else ""
        if "<!-- printed-digits -->" in body:
            body = re.sub(r"<!-- printed-digits -->.*?<!-- /printed-digits -->", lambda _: digits, body,
                          flags=re.S)
        else:
            body = body.rstrip() + "\n\n" + digits + "\n"
        write_section("label-text", body)
        return
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
Target with this ROI (read right >= 0.50, p95 <= 300 ms): **{"met" if met else "not met"}**; for
the printed digits read from the code's position, see the last part of this section.

What fails, seen in the readings: PP-OCRv4's detector never finds a UPC-A's two smaller outer
digits, printed apart beyond the guard bars (a 640 px crop with both plainly visible still gives
one box, the ten middle digits), so UPC-A is almost never read right by these three; on EAN-13
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

{digits}
"""
    print(body)
    write_section("label-text", body)


if __name__ == "__main__":
    main()
