"""What a verdict says: a reading tool's label on the overlay, the bound on a value sent with a
trigger, and the light modules that read verdicts without the model stack."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from core.records.verdicts import MAX_EXPECTED_CHARS, Reading, expected_value
from tests.readings import code_result

APP = Path(__file__).resolve().parents[1]


def test_a_reading_tool_shows_what_it_read_instead_of_a_score():
    read = code_result()  # a real EAN-13 photo, read by the decoder
    assert read.label() == 'serial: PASS "8480010001136" (EAN-13)'
    assert code_result(expected="4006381333931").label() == 'serial: FAIL wrong code "8480010001136" (EAN-13)'
    long = replace(read, reading=Reading("SN:" + "0123456789" * 5 + "\r\nLOT 7", "QR Code"))
    assert long.label() == 'serial: PASS "SN:012345678901234567..." (QR Code)'  # one short line
    broken = replace(read, reading=Reading("A\r\nB\x1dC", "Data Matrix"))
    assert broken.label() == 'serial: PASS "A??B?C" (Data Matrix)'
    assert replace(read, reading=None).label() == "serial: PASS 0.00"  # the other kinds: the score


def test_a_value_sent_with_a_trigger_is_a_short_text_or_nothing():
    assert expected_value("0042-SN") == "0042-SN" and expected_value("9" * MAX_EXPECTED_CHARS)
    assert expected_value(None) is None and expected_value("") is None
    with pytest.raises(ValueError, match="must be a text .*leading zeros"):
        expected_value(42)
    with pytest.raises(ValueError, match=f"201 characters long: at most {MAX_EXPECTED_CHARS}"):
        expected_value("9" * (MAX_EXPECTED_CHARS + 1))


def test_the_records_and_the_line_links_load_neither_torch_nor_opencv():
    code = ("import sys, core.records.verdicts, core.records.history, core.records.reports, "
            "core.integrations.mqtt, core.integrations.opcua\n"
            "sys.exit(', '.join(m for m in ('torch', 'cv2') if m in sys.modules) or None)")
    done = subprocess.run([sys.executable, "-c", code], cwd=APP, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
