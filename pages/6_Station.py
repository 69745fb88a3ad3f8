"""Station: its name, where its history goes and its line integrations (MQTT, OPC UA).

The settings are saved in ``station.json`` in the workspace (``inspector station show|set`` from a
shell); the history writer and the line integrations start with the line, so a change applies
when the line restarts ('Restart the line': the live sessions go on with the new line).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import pandas as pd
import streamlit as st

import pages as ui
from core.errors import InspectorError
from core.security.access import ADMINISTER
from core.station.line import station_line
from core.station.live_station import restart_line
from core.store.settings import HISTORY_URL_ENV, MQTT_PASSWORD_ENV, load_settings, save_settings
from core.store.tools import current_actor

ui.page_setup("Station", needs=ADMINISTER)
try:
    current = load_settings()
except InspectorError as exc:
    st.error(str(exc))
    st.stop()

line = station_line()
st.subheader("Now", anchor=False)
st.markdown(f"Station **{line.settings.name}** · history in `{line.history.location}`")
for status in line.status():
    (st.success if status.connected else st.warning)(status.summary())
for problem in line.problems():
    st.warning(problem)
if not line.status():
    st.caption("No line integration is running.")
if line.settings != current:
    st.info("Saved settings differ from those the line runs with: restart the line to apply them.")
if st.button("Restart the line", key="station_restart",
             help="Closes the history writer, MQTT and OPC UA and opens them again with the saved "
                  "settings; live inspection goes on (a few milliseconds of events are held)."):
    try:
        line = restart_line(current_actor())
        ui.flash(f"The line restarted: history in {line.history.location}, "
                 f"{len(line.status())} integration(s).")
        st.rerun()
    except InspectorError as exc:
        st.error(str(exc))

with st.form("station_settings"):
    st.subheader("Settings", anchor=False)
    left, right = st.columns(2)
    name = left.text_input("Station name", current.name, key="station_name",
                           help="Recorded with every verdict and used in MQTT topics; unique in "
                                "the plant.")
    heartbeat = right.number_input("Heartbeat (s)", 1.0, 3600.0, float(current.heartbeat_s),
                                   help="Continuous mode: one event per tool at least this often "
                                        "while its verdict holds.")
    history_url = st.text_input(
        "History database", current.history_url or "", key="station_history",
        placeholder="SQLite in the workspace",
        help="Empty: SQLite in the workspace. A plant server: postgresql+psycopg://user:password@"
             f"host/database. The environment variable {HISTORY_URL_ENV} overrides it.")
    keep_images = st.toggle("Keep the image of every FAIL", current.keep_fail_images)
    left, right = st.columns(2)
    image_kb = left.number_input("FAIL image size cap (kB)", 10, 5000, current.fail_image_max_kb)
    image_days = right.number_input("Keep FAIL images for (days)", 1, 3650, current.fail_image_days)

    st.markdown("**Who gets in** (see docs/SECURITY.md)")
    left, right = st.columns(2)
    timeout = left.number_input("Log out after idle (min)", 0.5, 24 * 60.0,
                                float(current.session_timeout_min), key="station_timeout")
    kiosk = right.toggle("Live inspection without a login (as operator)",
                         current.kiosk_operator_view, key="station_kiosk",
                         help="For the kiosk: it opens straight into the operator view; "
                              "everything else still needs a login.")

    st.markdown("**MQTT** (verdicts out, triggers in; see docs/INTEGRATIONS.md)")
    mqtt_on = st.toggle("MQTT", current.mqtt.enabled, key="station_mqtt")
    left, mid, right = st.columns([3, 1, 2])
    mqtt_host = left.text_input("Broker host", current.mqtt.host, key="station_mqtt_host")
    mqtt_port = mid.number_input("Port", 1, 65535, current.mqtt.port)
    topic_root = right.text_input("Topic root", current.mqtt.topic_root)
    left, right = st.columns(2)
    mqtt_user = left.text_input("User name", current.mqtt.username or "")
    mqtt_password_file = right.text_input(
        "Password file", current.mqtt.password_file or "",
        help="A file only the station's user can read (chmod 600) with the password on its first "
             f"line, or set {MQTT_PASSWORD_ENV}. The password itself is never stored here or shown.")
    left, right = st.columns([1, 3])
    mqtt_tls = left.toggle("TLS", current.mqtt.tls, help="Encrypted, the broker's certificate checked "
                                                          "(usually port 8883).")
    mqtt_ca = right.text_input("Broker CA certificate", current.mqtt.ca_file or "",
                               placeholder="the system's certificate authorities")

    st.markdown("**OPC UA server** (for PLCs and SCADA)")
    opcua_on = st.toggle("OPC UA", current.opcua.enabled)
    left, right = st.columns(2)
    endpoint = left.text_input("Endpoint", current.opcua.endpoint)
    namespace = right.text_input("Namespace URI", current.opcua.namespace)
    saved = st.form_submit_button("Save", type="primary", key="station_save")

if saved:
    try:
        save_settings(replace(
            current, name=name.strip(), heartbeat_s=float(heartbeat),
            history_url=history_url.strip() or None, keep_fail_images=keep_images,
            fail_image_max_kb=int(image_kb), fail_image_days=int(image_days),
            session_timeout_min=float(timeout), kiosk_operator_view=kiosk,
            mqtt=replace(current.mqtt, enabled=mqtt_on, host=mqtt_host.strip(), port=int(mqtt_port),
                         topic_root=topic_root.strip(), username=mqtt_user.strip() or None,
                         password_file=mqtt_password_file.strip() or None, tls=mqtt_tls,
                         ca_file=mqtt_ca.strip() or None),
            opcua=replace(current.opcua, enabled=opcua_on, endpoint=endpoint.strip(),
                          namespace=namespace.strip())))
    except InspectorError as exc:
        st.error(str(exc))
    else:
        ui.flash("Saved. Press 'Restart the line' to apply them (the history and the "
                 "integrations start with the line).")
        st.rerun()

st.subheader("Users", anchor=False)
people = ui.user_store().all()
st.dataframe(pd.DataFrame([{"User": u["name"], "Role": u["role"], "PIN": "yes" if u["pin"] else "",
                            "Locked until": (f"{datetime.fromtimestamp(u['locked_until']):%H:%M}"
                                             if u["locked_until"] else "")} for u in people],
                          columns=["User", "Role", "PIN", "Locked until"]),
             hide_index=True, width="stretch")
st.caption("Users are added, changed and unlocked from the station's shell: `inspector users add "
           "NAME --role operator|engineer|manager|admin`, `inspector users pin|password|role|"
           "unlock|remove NAME` (docs/SECURITY.md).")
