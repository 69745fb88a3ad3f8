"""Live inspection: the webcam stream(s) judged frame by frame, a large PASS/FAIL, live settings.

One stream per camera of the station, each with the tools bound to it (a tool's camera is set on
the Home page). Triggered mode judges one frame per TRIGGER (button or key T). A started camera
that sends no frames shows what to do, and the verdict returns by itself when frames come back.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path

if str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av
import streamlit as st
from PIL import Image
from streamlit_webrtc import WebRtcMode, webrtc_streamer

import pages as ui
from core import live as live_core
from core.errors import InspectorError
from core.inference import Inspector
from core.line import station_line
from core.live import LiveSession
from core.workspace import workspace_root

ui.page_setup("Live inspection", ":material/videocam:")

all_tools = ui.store().all()
trained = [t for t in all_tools if t.config.active_version and t.config.enabled]
if not trained:
    st.info("No trained tool yet: capture photos, then train a tool on the Training page.")
chosen = st.sidebar.multiselect("Tools to run", [t.name for t in trained],
                                default=[t.name for t in trained], key="live_tools")
running_tools = [t for t in trained if t.name in chosen]
# one stream per camera, with the tools bound to it (Home page: 'Camera' of a tool)
cameras = live_core.by_camera(running_tools) or {live_core.DEFAULT_CAMERA: []}


@st.cache_resource(show_spinner="Loading the models...", max_entries=8)
def live_session(home: str, camera: str, tools: tuple[tuple[str, str], ...]) -> LiveSession:
    """One live session per workspace, camera and set of (tool, active version): a new version
    or a different choice of tools builds a new one; settings changes do not."""
    store = ui.store()
    line = station_line()
    session = LiveSession(Inspector.from_tools([store.get(name) for name, _ in tools]),
                          line.sink, camera, heartbeat_s=line.settings.heartbeat_s)
    line.attach(session)  # verdicts to the history and the line, the line's triggers to it
    return session


try:
    sessions = {camera: live_session(str(workspace_root()), camera,
                                     tuple((t.name, t.config.active_version) for t in tools))
                for camera, tools in cameras.items()}
except InspectorError as exc:
    st.error(str(exc))
    st.stop()

# ------------------------------------------------------------------ settings (next frame)
with st.sidebar:
    for problem in station_line().problems():
        st.warning(problem, icon=":material/lan:")
    mode = st.radio("Mode", ["Continuous", "Triggered"], key="live_mode", horizontal=True,
                    help="Triggered judges one frame per press of TRIGGER (or an external "
                         "trigger) and holds the verdict.")
    heatmaps = st.toggle("Show Grad-CAM heatmaps", key="live_heatmaps",
                         help="Anomaly tools show their anomaly map: where the part looks unusual.")
    for live in sessions.values():
        live.continuous, live.heatmaps = mode == "Continuous", heatmaps
    runners = {name: r for live in sessions.values() for name, r in live.runners.items()}
    if runners:
        tune = st.selectbox("Settings of", list(runners), key="live_tune")
        runner = runners[tune]
        cfg = runner.config
        keys = {k: f"live_{k}::{tune}::{runner.model.version}" for k in ("threshold", "smoothing", "tta")}
        st.session_state.setdefault(keys["threshold"], float(cfg.threshold))
        st.session_state.setdefault(keys["smoothing"], int(cfg.smoothing))
        st.session_state.setdefault(keys["tta"], bool(cfg.tta.enabled))
        threshold = st.slider("Threshold (FAIL at or above)", 0.0, 1.0, step=0.01,
                              key=keys["threshold"])
        smoothing = st.slider("Smoothing (frames averaged)", 1, 30, key=keys["smoothing"])
        tta = st.toggle("Test-time augmentation (steadier, slower)", key=keys["tta"])
        changes = {}
        if abs(threshold - cfg.threshold) > 1e-9:
            changes["threshold"] = float(threshold)
        if smoothing != cfg.smoothing:
            changes["smoothing"] = int(smoothing)
        if tta != cfg.tta.enabled:
            changes["tta"] = replace(cfg.tta, enabled=tta)
        try:
            if changes:
                runner.configure(**changes)
            if st.button("Save settings to the tool", key="live_save"):
                runner.configure(persist=True, threshold=float(threshold), smoothing=int(smoothing),
                                 tta=replace(cfg.tta, enabled=tta))
                st.success(f"Saved to '{tune}'.")
        except InspectorError as exc:
            st.error(str(exc))
        if changes or threshold != runner.tool.config.threshold:
            st.caption("Live now; 'Save settings' keeps them for the next start.")

# ------------------------------------------------------------------ streams and verdicts

def frame_callback(live: LiveSession):
    def on_frame(frame: av.VideoFrame) -> av.VideoFrame:  # webcam thread: no st.* in here
        out = live.process(frame.to_ndarray(format="bgr24"))
        return av.VideoFrame.from_ndarray(out, format="bgr24")
    return on_frame


@st.fragment(run_every=0.4)
def verdict_panel(live: LiveSession, playing: bool) -> None:
    problem = live.camera_problem(playing)
    if problem:  # clears by itself as soon as frames arrive again
        st.markdown(ui.verdict_html("NO FRAMES"), unsafe_allow_html=True)
        st.error(problem, icon=":material/videocam_off:")
        return
    shown = live.current() if playing else None  # a stopped camera's verdict is not current
    if live.error:
        st.error(live.error)
    if not live.inspector.runners:
        st.markdown(ui.verdict_html("NO TOOL"), unsafe_allow_html=True)
        return
    if shown is None:
        label = "START CAMERA" if not playing else (
            "WAITING" if live.continuous else "PRESS TRIGGER")
        hint = f"button TRIGGER or key {ui.TRIGGER_KEY}" if label == "PRESS TRIGGER" else ""
        st.markdown(ui.verdict_html(label, hint), unsafe_allow_html=True)
        return
    when = "" if live.continuous else f" at {datetime.fromtimestamp(shown.time):%H:%M:%S}"
    st.markdown(ui.verdict_html(shown.verdict, f"{len(shown.results)} tool(s){when}"),
                unsafe_allow_html=True)
    for r in shown.results:
        icon = ":green[PASS]" if r.passed else f":red[FAIL {r.defect_class or ''}]"
        st.markdown(f"**{r.tool}** {icon} · score {r.smoothed:.2f} (frame {r.score:.2f}) / "
                    f"threshold {r.threshold:.2f} · {r.latency_ms:.0f} ms · {r.version}")


trigger_slot = None
streaming: dict[str, bool] = {}
for camera, live in sessions.items():
    if len(sessions) > 1:
        st.subheader(f"Camera {camera}", anchor=False)
    video_col, verdict_col = st.columns([3, 2])
    with video_col:
        ctx = webrtc_streamer(key=f"live::{camera}", mode=WebRtcMode.SENDRECV,
                              rtc_configuration=ui.RTC_CONFIGURATION,
                              video_frame_callback=frame_callback(live),
                              media_stream_constraints={"video": True, "audio": False},
                              translations=ui.CAMERA_TRANSLATIONS)
        streaming[camera] = bool(ctx.state.playing)
        ui.camera_help(ctx)
    with verdict_col:
        if trigger_slot is None:
            trigger_slot = st.container()
        verdict_panel(live, streaming[camera])

if mode == "Triggered":
    # one trigger judges the next frame of every camera; the T key (or a pedal sending T) too
    with trigger_slot:
        if st.button("TRIGGER", type="primary", key="live_trigger", width="stretch",
                     shortcut=ui.TRIGGER_KEY, disabled=not any(streaming.values()),
                     help=f"Judge the next frame (key {ui.TRIGGER_KEY})."):
            for live in sessions.values():
                live.request_trigger()

# ------------------------------------------------------------------ region of interest
with st.expander("Region of interest", expanded=False):
    from streamlit_drawable_canvas import st_canvas

    tool_names = [t.name for t in all_tools]
    if not tool_names:
        st.caption("Create a tool first.")
    else:
        roi_tool = st.selectbox("Tool", tool_names, key="roi_tool")
        roi_camera = next(t.config.camera for t in all_tools if t.name == roi_tool)
        snap_from = sessions.get(roi_camera) or next(iter(sessions.values()))  # its camera
        if st.button("Take a snapshot of the current frame", key="roi_snapshot"):
            frame = snap_from.frames.get()
            if frame is None:
                st.warning("No frame yet: start the camera first.")
            else:
                st.session_state["roi_frame"] = frame
        frame = st.session_state.get("roi_frame")
        if frame is not None:
            fh, fw = frame.shape[:2]
            cw = 640
            ch = int(round(cw * fh / fw))
            st.caption("Drag a rectangle around the part, then save. The last rectangle counts.")
            canvas = st_canvas(fill_color="rgba(0, 255, 0, 0.15)", stroke_width=3,
                               stroke_color="#00ff00",
                               background_image=Image.fromarray(ui.to_rgb(frame).copy()),
                               drawing_mode="rect", width=cw, height=ch, key="roi_canvas")
            if st.button("Save ROI", type="primary", key="roi_save"):
                try:
                    roi = ui.roi_from_canvas(canvas.json_data, (cw, ch), (fw, fh))
                    if roi is None:
                        st.warning("Draw a rectangle first.")
                    else:
                        if roi_tool in runners:
                            runners[roi_tool].configure(persist=True, roi=roi)
                        else:
                            ui.store().get(roi_tool).update(roi=roi)
                        st.success(f"ROI of '{roi_tool}' saved: x {roi.x:.2f}, y {roi.y:.2f}, "
                                   f"w {roi.w:.2f}, h {roi.h:.2f}. Live now.")
                except InspectorError as exc:
                    st.error(str(exc))
