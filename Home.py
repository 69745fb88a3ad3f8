"""Shopfloor Inspector: the station at a glance, and tool management."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

import pages as ui
from core.engine.backbones import available_profiles
from core.engine.exchange import export_tool, import_tool
from core.engine.kinds import KINDS
from core.errors import InspectorError
from core.records.reports import local_zone
from core.security.access import CONFIGURE, refusal, require
from core.station import live
from core.station.guidance import active_balanced_accuracy, next_steps
from core.station.line import station_line
from core.station.live_station import line_summary

user = ui.page_setup("Shopfloor Inspector")
store = ui.store()

tools, broken = store.scan()
with st.container():  # a fixed slot: the tabs below keep their place (and their open tab)
    for name, problem in broken.items():
        st.warning(f"Tool '{name}' cannot be opened and is not inspected: {problem}")

# ------------------------------------------------------------------ station at a glance
st.subheader("Tools")
with st.container():  # as many rows and hints as tools, in one slot
    if not tools:
        st.info("No tool yet. Create one below, then capture photos on the Capture page.")
    else:
        try:
            history, zone = station_line().history, local_zone()
        except InspectorError:  # page_setup has said why
            history = None
        rows, on_line = [], line_summary()
        for tool in tools:
            c = tool.config
            last = history.last_event(tool.name) if history else None
            counts = ui.dataset(tool).counts()
            rows.append({
                "Tool": tool.name, "Kind": c.kind, "Camera": c.camera,
                "Images": ", ".join(f"{k} {v}" for k, v in counts.items()),
                "Active version": c.active_version or "none",
                "Validation bal. acc.": ui.fmt_pct(active_balanced_accuracy(tool)),
                "Threshold": round(c.threshold, 3), "Line": on_line.get(tool.name, ""),
                "Last verdict": (f"{last['verdict']} ({last['time'].tz_convert(zone):%m-%d %H:%M:%S})"
                                 if last else "-"),
            })
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        st.caption("Cameras: " + "; ".join(
            f"**{camera}** ({', '.join(t.name for t in group)})"
            for camera, group in live.by_camera(tools).items())
            + ". Live inspection shows one stream per camera with the tools bound to it.")

        st.subheader("Next steps")
        for tool in tools:
            for hint in next_steps(tool):
                st.markdown(f"**{tool.name}**: {hint}")

# ------------------------------------------------------------------ management
st.subheader("Manage tools")
if not user.may(CONFIGURE):
    st.info(refusal(CONFIGURE, user))
    st.stop()
create_tab, edit_tab, exchange_tab = st.tabs(["Create", "Rename / duplicate / camera / delete",
                                              "Export / import"], key="manage_tabs", on_change="rerun")

with create_tab:
    with st.form("create_tool", clear_on_submit=False):
        name = st.text_input("Tool name", key="new_name", placeholder="e.g. impeller top")
        kind = st.radio("Kind", list(KINDS), key="new_kind", horizontal=True,
                        format_func=lambda k: f"{k.capitalize()}: {KINDS[k].title}",
                        help="A classifier learns good and defect photos; an anomaly tool needs "
                             "only good photos and flags whatever looks unusual; a code or text "
                             "tool learns nothing: you set what it must read on the Training page.")
        classes = st.text_input("Classes (comma separated, must include 'good'; classifier only)",
                                value="good, defect", key="new_classes")
        profiles = available_profiles()
        profile = st.selectbox("Network profile", list(profiles), key="new_profile",
                               format_func=lambda p: f"{p}: {profiles[p].description}")
        flips = st.checkbox("Parts look the same mirrored (allow flips when training; anomaly "
                            "tools also allow quarter turns)", key="new_flips")
        if st.form_submit_button("Create tool", type="primary"):
            try:
                wanted = tuple(c.strip() for c in classes.split(",") if c.strip())
                learnt = {"classes": wanted, "profile": profile, "allow_flips": flips}
                tool = store.create(name.strip(), kind=kind, **(learnt if KINDS[kind].learns else {}))
                st.session_state[ui.CURRENT_TOOL] = tool.name
                ui.flash(f"Created tool '{tool.name}'. Next: set its ROI and capture photos on "
                         "the Capture page.", "home.create")
                st.rerun()
            except InspectorError as exc:
                st.error(str(exc))
    ui.show_flash("home.create")

names = [t.name for t in tools]
with edit_tab:
    if not names:
        st.caption("Create a tool first.")
        ui.show_flash("home.edit")  # "Deleted tool ..." after the last one went
    else:
        current = st.session_state.get(ui.CURRENT_TOOL)
        target = st.selectbox("Tool", names, key="manage_tool",
                              index=names.index(current) if current in names else 0)
        new_name = st.text_input("New name (for rename or duplicate)", key="manage_new_name")
        col1, col2, col3 = st.columns(3)
        actions = {"Rename": (col1, store.rename, "Renamed '{old}' to '{new}'."),
                   "Duplicate": (col2, store.duplicate, "Duplicated '{old}' as '{new}'.")}
        for label, (column, action, message) in actions.items():
            if column.button(label, key=label.lower()):
                try:
                    st.session_state[ui.CURRENT_TOOL] = action(target, new_name.strip()).name
                    ui.flash(message.format(old=target, new=new_name.strip()), "home.edit")
                    st.rerun()
                except InspectorError as exc:
                    st.error(str(exc))
        if col3.button("Delete...", key="delete"):
            st.session_state["confirm_delete"] = target
        # right under the buttons, where the engineer looks, until dismissed or the next action
        ui.show_flash("home.edit")
        pending = st.session_state.get("confirm_delete")
        if pending:
            st.warning(f"Delete tool '{pending}' with all its photos and models? This cannot be "
                       "undone (export it first to keep a copy).")
            yes, no = st.columns(2)
            if yes.button(f"Yes, delete '{pending}'", key="delete_confirm", type="primary"):
                try:
                    store.delete(pending)
                    ui.flash(f"Deleted tool '{pending}' with its photos and models.", "home.edit")
                    st.session_state.pop(ui.CURRENT_TOOL, None)
                    st.session_state.pop("confirm_delete", None)
                    st.rerun()
                except InspectorError as exc:
                    st.error(str(exc))
            if no.button("Cancel", key="delete_cancel"):
                st.session_state.pop("confirm_delete", None)
                st.rerun()
        camera = st.text_input("Camera this tool watches (Live inspection shows one stream per "
                               "camera)", value=tools[names.index(target)].config.camera,
                               key=f"camera::{target}")
        if st.button("Set camera", key="set_camera"):
            try:
                camera = live.camera_name(camera)
                store.get(target).update(camera=camera)
                ui.flash(f"'{target}' now watches camera '{camera}'.", "home.camera")
                st.rerun()
            except InspectorError as exc:
                st.error(str(exc))
        ui.show_flash("home.camera")

with exchange_tab:
    left, right = st.columns(2)
    with left:
        st.markdown("**Export a tool to one file**")
        if names:
            export_name = st.selectbox("Tool", names, key="export_tool")
            with_images = st.checkbox("Include its photos", key="export_images")
            if st.button("Prepare file", key="export_prepare"):
                try:
                    with tempfile.TemporaryDirectory() as tmp:
                        path = export_tool(store.get(export_name),
                                           Path(tmp) / f"{export_name}.inspector",
                                           include_images=with_images)
                        st.session_state["export_file"] = (path.name, path.read_bytes())
                except InspectorError as exc:
                    st.error(str(exc))
            if "export_file" in st.session_state:
                file_name, data = st.session_state["export_file"]
                st.download_button(f"Download {file_name} ({len(data) / 1e6:.1f} MB)", data,
                                   file_name=file_name, mime="application/zip",
                                   key="export_download")
        else:
            st.caption("Create a tool first.")
    with right:
        st.markdown("**Import a tool file**")
        upload = st.file_uploader("Tool file", key="import_file")
        rename_to = st.text_input("Install under another name (optional)", key="import_name")
        replace = st.checkbox("Replace a tool with the same name", key="import_replace")
        if st.button("Import", key="import_go", disabled=upload is None):
            try:
                require(CONFIGURE)  # import_tool writes the files itself, past the checks of Tool
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / "upload.inspector"
                    path.write_bytes(upload.getvalue())
                    tool = import_tool(path, store, name=rename_to.strip() or None,
                                       replace_existing=replace)
                st.session_state[ui.CURRENT_TOOL] = tool.name
                st.success(f"Imported tool '{tool.name}'"
                           + (f" with model {tool.config.active_version}"
                              if tool.config.active_version else " (no model)"))
            except InspectorError as exc:
                st.error(str(exc))
