"""What a reading tool gives, made from a real code photo of ../shared/datasets/zxing_barcodes by
the real decoder (core.engine.codes): the records and line tests need a reading tool's results, and the
reading kinds that make them are not these tests' subject."""

from __future__ import annotations

from core.engine.codes import ExpectedCode, check_code, read_codes
from core.records.verdicts import FAIL, PASS, Reading, ToolResult
from tests.test_codes import photo

EAN13_PHOTO = "ean13-1_10.jpg"  # reads 8480010001136


def code_result(name: str = EAN13_PHOTO, tool: str = "serial", expected: str | None = None
                ) -> ToolResult:
    """A code tool's verdict on a code photo: PASS when the decoder reads ``expected`` (default:
    the photo's label), with what it read."""
    image, label = photo(name)
    check = check_code(read_codes(image), ExpectedCode.exact(expected or label))
    failed = float(not check.passed)
    height, width = image.shape[:2]
    reading = Reading(check.read.text, check.read.symbology) if check.read else None
    return ToolResult(tool, PASS if check.passed else FAIL, None if check.passed else "wrong code",
                      failed, failed, 0.5, (0, 0, width, height), None, 3.0, "v1", reading=reading)
