"""Label text on real barcode photos: the digits printed under the bars, read in a ROI and checked."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from core.engine.label_text import (ExpectedText, TextLine, TextReading, find_retail_code, normalise,
                                    read_printed_digits, read_text)
from core.errors import InspectorError
from core.store.datasets import read_image
from tests.conftest import DATASETS

ROOT = Path(__file__).resolve().parents[1]
PHOTO = DATASETS / "zxing_barcodes" / "images" / "good" / "ean13-2_22.jpg"  # a book's EAN-13
CODE = "9784872348880"
DIGITS_ROI = (slice(240, 300), slice(50, 460))  # rows, columns: around the printed number


@pytest.fixture(scope="module")
def digits_reading() -> TextReading:
    if not PHOTO.is_file():
        pytest.fail(f"the shared datasets are missing: expected {PHOTO}")
    return read_text(read_image(PHOTO)[DIGITS_ROI])


def test_the_printed_code_is_read_and_matched(digits_reading):
    assert digits_reading.lines and all(0 < line.confidence <= 1 for line in digits_reading.lines)
    assert all(x <= 410 and y <= 60 for line in digits_reading.lines for x, y in line.box)
    verdict = ExpectedText.exact(CODE).check(digits_reading)
    assert verdict.passed, verdict.message
    assert ExpectedText.pattern(r"97[89]\d{10}").check(digits_reading).passed


def test_a_pattern_mismatch_fails_saying_what_was_read(digits_reading):
    verdict = ExpectedText.pattern(r"LOT\d{6}").check(digits_reading)
    assert not verdict.passed
    assert verdict.message == rf"read '{digits_reading.rows[0]}', expected pattern 'LOT\d{{6}}'"
    assert CODE in verdict.message.replace(" ", "")
    wrong = ExpectedText.exact("9784872348881").check(digits_reading)
    assert not wrong.passed and wrong.message.endswith("expected text '9784872348881'")


def test_the_value_sent_with_the_trigger_is_what_is_checked(digits_reading):
    expected = ExpectedText.at_trigger()
    assert expected.check(digits_reading, given=CODE).passed
    assert not expected.check(digits_reading, given="9780345348036").passed
    with pytest.raises(InspectorError, match="send the expected text with the trigger"):
        expected.check(digits_reading)


def test_a_blank_label_fails_with_no_text_found():
    blank = np.full((120, 400, 3), 235, np.uint8)
    verdict = ExpectedText.exact(CODE).check(read_text(blank))
    assert not verdict.passed and verdict.message == "no text found"


def test_the_whole_photo_is_read_in_rows_top_to_bottom():
    reading = read_text(read_image(PHOTO))
    tops = [min(line.top for line in row) for row in reading.row_lines]
    assert tops == sorted(tops) and reading.text.count("\n") == len(reading.rows) - 1
    assert ExpectedText.exact(CODE).check(reading).passed


def test_threads_share_the_engine_and_get_the_same_text():
    roi = read_image(PHOTO)[DIGITS_ROI]
    texts: list[str] = []
    threads = [threading.Thread(target=lambda: texts.append(read_text(roi).text)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(texts) == 2 and texts[0] == texts[1] != ""


def reading_of(*texts: str) -> TextReading:
    """Lines side by side in one row, as an OCR returns a code's digit groups."""
    return TextReading(tuple(TextLine(t, 0.9, ((40 * i, 10), (40 * i + 30, 10), (40 * i + 30, 30),
                                               (40 * i, 30))) for i, t in enumerate(texts)), 1.0)


def test_digit_lookalikes_are_read_as_digits_only_where_digits_are_expected():
    assert normalise("9 78O-48 7234888 >", digits=True) == "9780487234888"
    assert normalise("  LOT\u3000 OO12 ", digits=False) == "LOT OO12"
    assert ExpectedText.exact("0 36602 30146 7").check(reading_of("O", "36602", "3O146", "7")).passed
    assert ExpectedText.pattern(r"\d{12}").check(reading_of("O", "36602", "3O146", "7")).passed
    assert not ExpectedText.exact("LOT0012").check(reading_of("LOT", "OO12")).passed
    assert ExpectedText.exact("LOT 0012").check(reading_of("LOT0012")).passed


def test_bad_expectations_and_images_are_refused_in_one_line():
    with pytest.raises(InspectorError, match="not a valid regular expression"):
        ExpectedText.pattern(r"LOT(\d{6}")
    with pytest.raises(InspectorError, match="is empty"):
        ExpectedText.exact("  ")
    with pytest.raises(InspectorError, match="at least 8 x 8 pixels"):
        read_text(np.zeros((0, 0, 3), np.uint8))
    long_read = ExpectedText.exact("X").check(reading_of("A" * 200))
    assert len(long_read.message) < 120 and "..." in long_read.message


def test_reads_offline_without_torch():
    """The models ship in the wheel: a read with every network call refused works, and the
    module loads no torch."""
    script = (
        "import socket, sys\n"
        "def refuse(*args, **kwargs):\n"
        "    raise SystemExit('the OCR tried the network')\n"
        "socket.socket.connect = socket.create_connection = socket.getaddrinfo = refuse\n"
        "from core.store.datasets import read_image\n"
        "from core.engine.label_text import read_text\n"
        f"reading = read_text(read_image({str(PHOTO)!r})[{DIGITS_ROI[0].start}:{DIGITS_ROI[0].stop},"
        f" {DIGITS_ROI[1].start}:{DIGITS_ROI[1].stop}])\n"
        "from core.engine.label_text import find_retail_code, read_printed_digits\n"
        f"image = read_image({str(UPC_PHOTO)!r})\n"
        "digits = read_printed_digits(image, find_retail_code(image))\n"
        "assert 'torch' not in sys.modules, 'core.engine.label_text loaded torch'\n"
        "print(reading.text)\n"
        "print(digits.text)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert normalise(done.stdout.splitlines()[0], digits=True) == CODE
    assert done.stdout.splitlines()[-1] == "1 81497 00087 9"


# A UPC-A of the benchmark's tuned half (folder upca-2), its printed digits read from its position.
UPC_PHOTO = DATASETS / "zxing_barcodes" / "images" / "good" / "upca-2_09.jpg"
UPC_CODE = "181497000879"


def test_the_printed_digits_under_a_real_code_are_read_from_its_position():
    image = read_image(UPC_PHOTO)
    code = find_retail_code(image)
    assert code is not None and code.symbology == "UPC-A"
    reading = read_printed_digits(image, code)
    assert reading.text == "1 81497 00087 9"  # in its printed groups: the outer digits apart
    assert len(reading.lines) == 1 and 0 < reading.lines[0].confidence <= 1
    height, width = image.shape[:2]
    assert all(0 <= x < width and 0 <= y < height for x, y in reading.lines[0].box)
    assert min(y for _, y in reading.lines[0].box) >= min(y for _, y in code.corners)  # under the bars
    verdict = ExpectedText.exact(UPC_CODE).check(reading)
    assert verdict.passed, verdict.message
    assert ExpectedText.at_trigger().check(reading, given=UPC_CODE).passed


def test_printed_digits_that_differ_from_the_expected_fail_saying_what_was_read():
    image = read_image(UPC_PHOTO)
    reading = read_printed_digits(image, find_retail_code(image))
    wrong = ExpectedText.exact("181497000870").check(reading)
    assert not wrong.passed
    assert wrong.message == "read '1 81497 00087 9', expected text '181497000870'"


def test_printed_digits_are_read_only_for_retail_codes():
    qr = type("Code", (), {"symbology": "QRCode", "corners": ((0, 0), (9, 0), (9, 9), (0, 9))})()
    with pytest.raises(InspectorError, match="EAN-13, UPC-A or EAN-8"):
        read_printed_digits(np.zeros((40, 40, 3), np.uint8), qr)
    assert find_retail_code(np.full((120, 200, 3), 255, np.uint8)) is None
    with pytest.raises(InspectorError, match="not an 8-bit picture"):
        read_printed_digits(np.zeros((40, 40), np.float32), qr)
