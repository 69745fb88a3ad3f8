"""Code reading on real photos: exact matches per symbology, false reads, time per 640x480 frame.

``../shared/datasets/zxing_barcodes``: 400 photos of 14 symbologies with the text each must read
(``labels.csv``) and 47 photos without a code. Each photo is resized to a 640x480 camera frame
and read whole by ``core.engine.codes.read_codes``, reading every kind of code or only the photo's own
symbology (as a tool that names what it expects), then checked with ``check_code`` against its
label. The naive baseline is zxing-cpp called with its defaults, its text compared as it is.
The engine's settings were chosen on the tuning half (every other photo of each symbology, in
file order); the other half is reported apart, untuned.

    python -m benchmarks.code_reading [--repeats 5]
"""

from __future__ import annotations

import argparse
import csv
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path

import cv2
import numpy as np
import zxingcpp

from benchmarks.common import DATASETS, machine, write_section
from core.engine.codes import ExpectedCode, ReadOptions, check_code, read_codes
from core.store.datasets import read_image

SET = DATASETS / "zxing_barcodes"
FRAME = (640, 480)
TARGET_MATCH, BASELINE_MATCH, TARGET_P95_MS = 0.75, 0.60, 30.0
# labels.csv's symbology -> zxing's name of it, for the tools that name what they expect
SYMBOLOGY = {"aztec": "Aztec", "code128": "Code128", "code39": "Code39", "datamatrix": "DataMatrix",
             "ean13": "EAN13", "ean8": "EAN8", "itf": "ITF", "pdf417": "PDF417", "qrcode": "QRCode",
             "rss14": "DataBar", "rssexpanded": "DataBarExp", "upca": "UPCA", "upce": "UPCE",
             "upcean-extension": "EAN13"}
NO_CODE = "no_code"
ENGINE = "engine, 640x480, every kind"
ROTATED = "engine, 640x480, every kind, try_rotate"
NAMED = "engine, 640x480, its symbology"


@dataclass(frozen=True)
class Photo:
    file: Path
    symbology: str  # NO_CODE for a photo without a code
    text: str
    tuning: bool  # in the half the engine's settings were chosen on
    tool_reads: str  # what a tool naming its symbology reads here: this one's, or (no code) any


@dataclass(frozen=True)
class Outcome:
    matched: bool  # the label's text was read (never for a photo without a code)
    read: bool  # something was read


def photos() -> list[Photo]:
    """Every labelled photo, every other one of each symbology in the tuning half; the photos
    without a code go to tools of each symbology in turn."""
    with open(SET / "labels.csv", newline="", encoding="utf-8") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda row: row["file"])
    seen: dict[str, int] = defaultdict(int)
    out = []
    for row in rows:
        symbology = row["symbology"] or NO_CODE
        tool_reads = SYMBOLOGY[row["symbology"] or sorted(SYMBOLOGY)[seen[NO_CODE] % len(SYMBOLOGY)]]
        out.append(Photo(SET / row["file"], symbology, row["text"], seen[symbology] % 2 == 0, tool_reads))
        seen[symbology] += 1
    return out


def naive(image: np.ndarray, photo: Photo) -> Outcome:
    """zxing-cpp's defaults on the whole image, its text compared as it is."""
    texts = [barcode.text for barcode in zxingcpp.read_barcodes(image)]
    return Outcome(photo.symbology != NO_CODE and photo.text in texts, bool(texts))


def engine(options: ReadOptions, restricted: bool = False) -> Callable[[np.ndarray, Photo], Outcome]:
    """``read_codes`` then ``check_code``: every kind of code, or only the photo's symbology."""

    tools = {name: replace(options, symbologies=(name,)) for name in set(SYMBOLOGY.values())}

    def read(image: np.ndarray, photo: Photo) -> Outcome:
        reads = read_codes(image, tools[photo.tool_reads] if restricted else options)
        matched = photo.symbology != NO_CODE and check_code(reads, ExpectedCode.exact(photo.text)).passed
        return Outcome(matched, bool(reads))

    return read


@dataclass
class Run:
    """One method on every photo: its outcome and the wall and CPU milliseconds of each (the
    least of the repeats: the machine is shared, and other jobs only ever add time)."""

    outcomes: list[Outcome]
    wall_ms: np.ndarray
    cpu_ms: np.ndarray
    first_wall_ms: np.ndarray  # the first repeat alone, with the other jobs' interference


def run(method: Callable[[np.ndarray, Photo], Outcome], images: list[np.ndarray],
        set_photos: list[Photo], repeats: int) -> Run:
    for image, photo in zip(images[:10], set_photos[:10]):  # warm-up
        method(image, photo)
    wall = np.zeros((repeats, len(images)))
    cpu = np.zeros((repeats, len(images)))
    for repeat in range(repeats):
        outcomes = []
        for i, (image, photo) in enumerate(zip(images, set_photos)):
            started_wall, started_cpu = time.perf_counter(), time.process_time()
            outcomes.append(method(image, photo))
            wall[repeat, i] = (time.perf_counter() - started_wall) * 1000
            cpu[repeat, i] = (time.process_time() - started_cpu) * 1000
    return Run(outcomes, wall.min(axis=0), cpu.min(axis=0), wall[0])


def rate(result: Run, set_photos: list[Photo], keep: Callable[[Photo], bool]) -> tuple[int, int]:
    """(matched, out of) among the code photos ``keep`` selects."""
    chosen = [outcome.matched for outcome, photo in zip(result.outcomes, set_photos)
              if photo.symbology != NO_CODE and keep(photo)]
    return sum(chosen), len(chosen)


def cell(right_of: tuple[int, int]) -> str:
    right, n = right_of
    return f"{right / n:.3f} ({right}/{n})" if n else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    set_photos = photos()
    stored = [read_image(photo.file) for photo in set_photos]
    frames = [cv2.resize(image, FRAME, interpolation=cv2.INTER_LINEAR) for image in stored]
    methods = {"naive, photo as stored": (naive, stored), "naive, 640x480": (naive, frames),
               "engine, 640x480, every kind, first pass only":
                   (engine(ReadOptions(retry_sharpened=False)), frames),
               ENGINE: (engine(ReadOptions()), frames),
               ROTATED: (engine(ReadOptions(try_rotate=True)), frames),
               NAMED: (engine(ReadOptions(), restricted=True), frames)}
    results = {}
    for name, (method, images) in methods.items():
        results[name] = run(method, images, set_photos, args.repeats)
        print(name, cell(rate(results[name], set_photos, lambda _: True)), flush=True)
    names = list(results)
    symbologies = sorted({photo.symbology for photo in set_photos} - {NO_CODE})
    rows = [f"| {symbology} | " + " | ".join(cell(rate(results[name], set_photos,
                                                       lambda p, s=symbology: p.symbology == s))
                                             for name in names) + " |" for symbology in symbologies]
    for label, keep in (("**tuning half**", lambda p: p.tuning), ("**untuned half**", lambda p: not p.tuning),
                        ("**all 400**", lambda _: True)):
        rows.append(f"| {label} | " + " | ".join(f"**{cell(rate(results[name], set_photos, keep))}**"
                                                 for name in names) + " |")
    code_photos = [i for i, photo in enumerate(set_photos) if photo.symbology != NO_CODE]
    no_code = [i for i, photo in enumerate(set_photos) if photo.symbology == NO_CODE]
    other_text = {name: sum(r.outcomes[i].read and not r.outcomes[i].matched for i in code_photos)
                  for name, r in results.items()}
    false_reads = {name: sum(r.outcomes[i].read for i in no_code) for name, r in results.items()}
    times = [f"| {name} | {np.percentile(r.wall_ms, 50):.1f} | {np.percentile(r.wall_ms, 95):.1f} | "
             f"{np.percentile(r.cpu_ms, 95):.1f} | {np.percentile(r.first_wall_ms, 95):.1f} | "
             f"{r.wall_ms.max():.1f} |" for name, r in results.items() if "640x480" in name]
    overall = rate(results[ENGINE], set_photos, lambda _: True)
    untuned = rate(results[ENGINE], set_photos, lambda p: not p.tuning)
    p95 = np.percentile(results[ENGINE].wall_ms, 95)
    cpu_p95 = np.percentile(results[ENGINE].cpu_ms, 95)
    rotated = rate(results[ROTATED], set_photos, lambda _: True)[0] - overall[0]
    named_p95 = np.percentile(results[NAMED].wall_ms, 95)
    write_section("code-reading", "\n".join([
        "## Code reading (barcodes, QR, DataMatrix), 640x480 frames",
        "",
        f"Machine: {machine()}; zxing-cpp {version('zxing-cpp')}. `../shared/datasets/zxing_barcodes`: "
        f"{len(code_photos)} real photos of {len(symbologies)} symbologies with the text each must "
        f"read, {len(no_code)} without a code. Each photo is resized to a 640x480 frame and read "
        "whole by `core.engine.codes.read_codes` (first pass: no 90-degree search, no downscaled copies; "
        "only when it finds nothing, a second pass on the frame shrunk to 320x240 and "
        "unsharp-masked), reading every kind of code or only the photo's symbology (a tool naming "
        "what it expects; the photos without a code go to such tools of each symbology in "
        "turn), then checked by `check_code` against the label exactly. Naive: "
        "zxing-cpp's defaults on the whole photo, its text compared as it is (labels.csv read as "
        "the csv module reads it, so the 7 QR labels holding CR LF keep it: 0.618; read with "
        "universal newlines they lose it and the naive rate is 240/400 = 0.60). The settings "
        "(which passes, the retry's size and sharpening) were chosen on the tuning half (every "
        "other photo of each symbology in file order); the untuned half was not looked at while "
        "choosing, except once: the first pass's options (90-degree search, downscaled copies; "
        "they changed at most 3 of the 400 reads, so time chose) were first compared on all the "
        "photos, before the halves were drawn. zxing's default binarizer (LocalAverage) is kept: "
        "GlobalHistogram in the retry read no more of the tuning half. Exact-match rate:",
        "",
        "| symbology | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
        *rows,
        "",
        f"Engine, every kind of code: **{overall[0] / overall[1]:.3f}** of the code photos matched "
        f"(untuned half {untuned[0] / untuned[1]:.3f}; target >= {TARGET_MATCH}, naive baseline "
        f"{BASELINE_MATCH}: {'met' if overall[0] / overall[1] >= TARGET_MATCH else 'not met'}). "
        f"False reads on the {len(no_code)} photos without a code (target 0): "
        f"{'; '.join(f'{name} {n}' for name, n in false_reads.items())}. Code photos where "
        "something was read but never the label's text (the naive reader: its text formats; "
        "else a misread or only another code in the photo; a check then FAILs, it does not "
        f"pass): {'; '.join(f'{name} {n}' for name, n in other_text.items())}.",
        "",
        f"Time per 640x480 frame over all {len(set_photos)} photos (ms). The machine was shared "
        f"with other agents' jobs while measured: each frame's time is the least of {args.repeats} "
        "repeats (other jobs only add time); the CPU time of the process and the first repeat "
        "alone are beside it.",
        "",
        "| method | wall p50 | wall p95 | CPU p95 | wall p95, first repeat alone | wall max |",
        "|---|---|---|---|---|---|",
        *times,
        "",
        f"Engine, every kind: wall p95 **{p95:.1f} ms** (target <= {TARGET_P95_MS:.0f} ms on this "
        f"2-core CPU: {'met' if p95 <= TARGET_P95_MS else 'not met'}; the process's own CPU time "
        f"p95 {cpu_p95:.1f} ms); a tool naming its symbology: wall p95 {named_p95:.1f} ms. The "
        "second pass runs only where the first reads nothing, so the slowest frames are those "
        f"without a readable code. `try_rotate` (1D codes turned 90 degrees) read {rotated} more "
        "photos for about twice the time: off by default, for tools whose codes can come turned. "
        "What the naive reader "
        "missed and the engine reads is mostly text format (the first-pass-only column): zxing "
        "gives a UPC-A as its 13-digit EAN-13 form, a UPC-E as the 13 digits it expands to, an "
        "RSS-14 (DataBar) as '(01)' + GTIN and invisible characters as control pictures; "
        "`core.engine.codes.printed_text` gives the text printed under the code instead, and a check "
        "takes a CR LF line break for the LF a person types. The rest is the sharpened second "
        "pass (soft prints, focus).",
        "",
        "Re-run: `.venv/bin/python -m benchmarks.code_reading` (a few minutes).",
    ]))


if __name__ == "__main__":
    main()
