"""The Station page driven headless with AppTest: it shows the line, saves valid settings to
station.json and refuses invalid ones with the reason, keeping what was saved."""

from __future__ import annotations

import sys
from pathlib import Path

from streamlit.testing.v1 import AppTest

from core.station.line import close_lines
from core.store.settings import load_settings
from tests.test_pages import log_in

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


def test_restart_the_line_applies_saved_settings_with_the_live_sessions_going_on(casting_tool,
                                                                                 workspace):
    from core.station.line import station_line
    from core.station.live_station import close_live_stations, live_station

    try:
        station = live_station(workspace)
        session = station.session("0")
        at = run_page()
        at.text_input(key="station_name").input("cell-4")
        at.button(key="station_save").click().run()
        assert "Restart the line" in at.success[0].value
        assert "differ from those the line runs with" in at.info[0].value
        log_in(at, "dana", "admin", workspace)
        at.button(key="station_restart").click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert "The line restarted" in at.success[0].value and not at.info
        line = station_line(workspace)
        assert line is station.line and line.settings.name == "cell-4"
        assert session.sink is line.sink and line.trigger("0", "after-restart") == 1
        assert line.recorder.flush(10)
        restarted = line.history.changes()
        restarted = restarted[restarted["action"] == "line restarted"].iloc[0]
        assert (restarted["actor"], restarted["station"]) == ("dana", "cell-4")
    finally:
        close_live_stations()
        close_lines()
