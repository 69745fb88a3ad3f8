"""The Station page driven headless with AppTest: it shows the line, saves valid settings to
station.json and refuses invalid ones with the reason, keeping what was saved."""

from __future__ import annotations

import sys
from pathlib import Path

from streamlit.testing.v1 import AppTest

from core.line import close_lines
from core.station import load_settings

APP = Path(__file__).resolve().parents[1]
if str(APP) not in sys.path:  # the pages' shared helpers are the package ``pages``
    sys.path.insert(0, str(APP))


def run_page() -> AppTest:
    return AppTest.from_file(str(APP / "pages/6_Station.py"), default_timeout=60).run()


def test_station_page_saves_settings_and_refuses_bad_ones(workspace):
    try:
        at = run_page()
        assert not at.exception and not at.error, [e.value for e in at.exception]
        assert "No line integration is running." in [c.value for c in at.caption]
        assert "history.sqlite" in at.markdown[1].value

        at.text_input(key="station_name").input("line-3-weld")
        at.text_input(key="station_mqtt_host").input("10.0.0.7")
        at.toggle(key="station_mqtt").set_value(True)
        at.button(key="station_save").click().run()
        assert "Saved." in at.success[0].value
        saved = load_settings()
        assert (saved.name, saved.mqtt.enabled, saved.mqtt.host) == ("line-3-weld", True, "10.0.0.7")

        at.text_input(key="station_history").input("my server")
        at.text_input(key="station_name").input("line 3")
        at.button(key="station_save").click().run()
        assert "not allowed" in at.error[0].value
        assert load_settings() == saved  # nothing half-saved
    finally:
        close_lines()
