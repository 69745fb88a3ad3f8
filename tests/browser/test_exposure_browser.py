"""A station started on every interface without HTTPS, seen in real Chromium: it shows what is
missing and serves no page (no login form offered in clear)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.browser import helpers

pytestmark = pytest.mark.slow


def test_a_station_on_the_lan_without_https_refuses_to_serve_its_pages(tmp_path, playwright_session):
    video = helpers.write_y4m(tmp_path / "camera.y4m", [([np.zeros((48, 64, 3), np.uint8)], 0.2)], 5)
    browser = helpers.launch_chromium(playwright_session.chromium, video)
    try:
        with helpers.streamlit_server(tmp_path, tmp_path / "streamlit.log", address="0.0.0.0") as url:
            page = helpers.new_page(browser)
            page.goto(url)
            page.get_by_text("without HTTPS").first.wait_for(timeout=60_000)
            assert page.get_by_text("Log in").count() == 0
    finally:
        browser.close()
