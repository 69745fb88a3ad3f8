"""Code reading on real photos of ../shared/datasets/zxing_barcodes, checked against labels.csv."""

from __future__ import annotations

import csv
import subprocess
import sys
from functools import cache

import numpy as np
import pytest

from core.engine.codes import SHOWN_CHARS, CodeRead, ExpectedCode, ReadOptions, check_code, read_codes
from core.errors import InspectorError
from core.store.datasets import read_image
from tests.conftest import DATASETS

SET = DATASETS / "zxing_barcodes"


@cache
def labels() -> dict[str, tuple[str, str]]:
    """images/<class>/<file> -> (symbology, text) as labels.csv gives them."""
    if not (SET / "labels.csv").is_file():
        pytest.fail(f"the shared datasets are missing: expected {SET}")
    with open(SET / "labels.csv", newline="", encoding="utf-8") as handle:
        return {row["file"]: (row["symbology"], row["text"]) for row in csv.DictReader(handle)}


def photo(name: str) -> tuple[np.ndarray, str]:
    """A code photo of the set and the text it must read."""
    return read_image(SET / "images" / "good" / name), labels()[f"images/good/{name}"][1]


@pytest.mark.parametrize("name, symbology", [("qrcode-3_01.jpg", "QR Code"),
                                             ("datamatrix-2_01.jpg", "Data Matrix"),
                                             ("ean13-1_10.jpg", "EAN-13"),
                                             ("code128-2_01.jpg", "Code 128")])
def test_a_code_is_read_and_matches_its_label(name, symbology):
    image, text = photo(name)
    reads = read_codes(image)
    result = check_code(reads, ExpectedCode.exact(text))
    assert result.passed, result.message
    assert result.read.symbology == symbology
    assert len(result.read.corners) == 4
    height, width = image.shape[:2]
    assert all(-5 <= x <= width + 5 and -5 <= y <= height + 5 for x, y in result.read.corners)


def test_a_wrong_expected_value_fails_saying_what_was_read():
    image, text = photo("ean13-1_10.jpg")
    result = check_code(read_codes(image), ExpectedCode.exact("4006381333931"))
    assert not result.passed
    assert result.message == f"read '{text}', expected '4006381333931'"
    assert result.read.text == text


def test_photos_without_a_code_fail_with_no_code_found():
    photos = sorted((SET / "images" / "no_code").iterdir())
    assert len(photos) == 47
    for path in photos:
        reads = read_codes(read_image(path))
        assert reads == [], f"{path.name}: read {[r.text for r in reads]}"
    result = check_code([], ExpectedCode.exact("0123"))
    assert (result.passed, result.message, result.read) == (False, "no code found", None)


def test_a_pattern_matches_the_whole_text_or_fails():
    image, text = photo("code128-2_01.jpg")
    reads = read_codes(image)
    assert text == "005-3379497200006"
    assert check_code(reads, ExpectedCode.matching(r"\d{3}-\d{13}")).passed
    result = check_code(reads, ExpectedCode.matching(r"\d{3}-\d{6}"))  # only the start matches
    assert not result.passed
    assert result.message == f"read '{text}', expected text matching '\\d{{3}}-\\d{{6}}'"
    assert not check_code(reads, ExpectedCode.matching(r"SN-\d+")).passed


def test_the_value_given_at_the_trigger_is_the_expected_one():
    image, text = photo("qrcode-3_01.jpg")
    reads = read_codes(image)
    expected = ExpectedCode.given_at_trigger()
    assert check_code(reads, expected, trigger_value=text).passed
    wrong = check_code(reads, expected, trigger_value="SN-000123")
    assert not wrong.passed and wrong.message.endswith(", expected 'SN-000123'")
    with pytest.raises(InspectorError, match="send it with the trigger"):
        check_code(reads, expected)


@pytest.mark.parametrize("symbology, read_as, digits", [("upca", "UPC-A", 12), ("upce", "UPC-E", 8),
                                                       ("rss14", "DataBar", 14)])
def test_retail_codes_read_as_the_digits_printed_under_them(symbology, read_as, digits):
    """zxing gives a UPC-A as 13 digits, a UPC-E as the 13 it expands to and an RSS-14 as
    '(01)' + GTIN; reads of these codes must be the digits of the label (a photo may show
    another code too, and zxing misreads a few)."""
    photos = {f: text for f, (s, text) in labels().items() if s == symbology}
    matched = 0
    for file, text in photos.items():
        assert len(text) == digits and text.isdigit()
        reads = read_codes(read_image(SET / file))
        for read in reads:
            if read.symbology.startswith(read_as) and "Expanded" not in read.symbology:
                assert read.text.isdigit() and len(read.text) == digits, f"{file}: {read.text}"
        matched += check_code(reads, ExpectedCode.exact(text)).passed
    assert matched >= 0.4 * len(photos)  # as stored: 35/51, 41/51 and 12/26 read right


def test_a_retail_code_matches_its_number_typed_with_more_digits():
    image, text = photo("upca-1_10.jpg")
    reads = read_codes(image)
    assert reads[0].symbology == "UPC-A" and reads[0].gtin == "00" + text
    assert check_code(reads, ExpectedCode.exact("0" + text)).passed  # as EAN-13
    assert check_code(reads, ExpectedCode.exact("00" + text)).passed  # as GTIN-14
    assert not check_code(reads, ExpectedCode.exact("1" + text)).passed


def test_invisible_characters_and_line_breaks_compare_as_typed():
    image, text = photo("pdf417-3_12.jpg")  # ISO 15434 message: RS and GS separators, spaces
    assert "\x1d" in text and " " in text
    reads = read_codes(image)
    assert reads[0].text == text
    result = check_code(reads, ExpectedCode.exact(text))
    assert result.passed
    assert "\n" not in result.message and len(result.message) <= len("read ''") + SHOWN_CHARS
    assert "␝" in result.message  # a separator is shown, not hidden
    image, text = photo("qrcode-1_17.jpg")  # the code holds CR LF line breaks
    assert "\r\n" in text
    assert check_code(read_codes(image), ExpectedCode.exact(text.replace("\r\n", "\n"))).passed


def test_a_failing_message_stays_one_bounded_line():
    image, text = photo("pdf417-3_12.jpg")
    result = check_code(read_codes(image), ExpectedCode.exact("x" * 500 + "\nend"))
    assert not result.passed
    assert "\n" not in result.message and len(result.message) < 2 * SHOWN_CHARS + 40
    assert result.message.startswith("read '[)>␞01␝") and "…" in result.message


def test_restricting_the_symbologies_reads_only_those():
    image, _ = photo("qrcode-3_01.jpg")
    assert read_codes(image, ReadOptions(("EAN-13", "Code128"))) == []
    assert read_codes(image, ReadOptions(("QRCode",)))[0].symbology == "QR Code"
    assert read_codes(image, ReadOptions("QR Code"))[0].symbology == "QR Code"  # one name, bare


def test_an_roi_crop_is_read_in_its_own_pixels():
    image, text = photo("qrcode-3_01.jpg")
    whole = read_codes(image)[0]
    xs, ys = [x for x, _ in whole.corners], [y for _, y in whole.corners]
    left, top = max(min(xs) - 20, 0), max(min(ys) - 20, 0)
    crop = image[top:max(ys) + 20, left:max(xs) + 20]  # a view, not a copy
    read = read_codes(crop)[0]
    assert read.text == text
    assert all(abs(x - (wx - left)) <= 3 and abs(y - (wy - top)) <= 3
               for (x, y), (wx, wy) in zip(read.corners, whole.corners))


def test_a_soft_print_reads_on_the_sharpened_second_pass_in_the_images_pixels():
    image, text = photo("upca-5_06.jpg")  # 480x480: the retry reads a smaller copy
    assert read_codes(image, ReadOptions(retry_sharpened=False)) == []
    read: CodeRead = read_codes(image)[0]
    assert read.text == text and read.second_pass
    moved = read_codes(image[40:, 40:])[0]  # its ends move 40 px left, whatever the retry's scale
    assert moved.second_pass and moved.text == text
    assert all(abs(x - (rx - 40)) <= 4 for (x, _), (rx, _) in zip(moved.corners, read.corners))


def test_2d_codes_tell_how_much_error_correction_was_left():
    read = read_codes(photo("qrcode-3_01.jpg")[0])[0]
    assert read.error_correction_level in ("L", "M", "Q", "H")
    assert 0.0 <= read.unused_error_correction <= 1.0 and read.version


@pytest.mark.parametrize("bad, message", [
    (lambda: ExpectedCode.matching("SN-[0-9"), "not a valid regular expression"),
    (lambda: ExpectedCode.exact(""), "expected text is empty"),
    (lambda: ExpectedCode(text="a", pattern="b"), "one of them"),
    (lambda: ReadOptions(("QR Kode",)), "Unknown code type in 'QR Kode'"),
    (lambda: read_codes(np.zeros((4, 4, 3), np.uint8)), "too small"),
    (lambda: read_codes(np.zeros((100, 100, 3), np.float32)), "8-bit BGR or grey"),
    (lambda: read_codes(np.zeros((100, 100, 4), np.uint8)), "4 channels"),
])
def test_bad_input_is_refused_in_one_line(bad, message):
    with pytest.raises(InspectorError, match=message) as refused:
        bad()
    assert "\n" not in str(refused.value)


def test_the_module_loads_without_torch():
    code = "import sys, core.engine.codes; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
