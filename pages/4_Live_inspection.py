"""Live inspection: the webcam stream judged frame by frame, a large PASS/FAIL, live settings."""

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
from core.errors import InspectorError
from core.inference import Inspector
from core.live import LiveSession
from core.workspace import workspace_root

ui.page_setup("Live inspection", ":material/videocam:")

try:
    all_tools = ui.store().all()
except InspectorError as exc:
    st.error(str(exc))
    st.stop()
trained = [t for t in all_tools if t.config.active_version and t.config.enabled]
if not trained:
    st.info("No trained tool yet: capture photos, then train a tool on the Training page.")
chosen = st.sidebar.multiselect("Tools to run", [t.name for t in trained],
                                default=[t.name for t in trained], key="live_tools")
running_tools = [t for t in trained if t.name in chosen]


@st.cache_resource(show_spinner="Loading the models...", max_entries=4)
def live_session(home: str, tools: tuple[tuple[str, str], ...]) -> LiveSession:
    """One live session per workspace and set of (tool, active version): a new version or a
    different choice of tools builds a new one; settings changes do not."""
    store = ui.store()
    return LiveSession(Inspector.from_tools([store.get(name) for name, _ in tools]))


try:
    live = live_session(str(workspace_root()),
                        tuple((t.name, t.config.active_version) for t in running_tools))
except InspectorError as exc:
    st.error(str(exc))
    st.stop()

# ------------------------------------------------------------------ settings (next frame)
with st.sidebar:
    mode = st.radio("Mode", ["Continuous", "Triggered"], key="live_mode", horizontal=True,
                    help="Triggered judges one frame per press of TRIGGER (or an external "
                         "trigger) and holds the verdict.")
    live.continuous = mode == "Continuous"
    live.heatmaps = st.toggle("Show Grad-CAM heatmaps", key="live_heatmaps")
    runners = live.runners
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

# ------------------------------------------------------------------ stream and verdict
video_col, verdict_col = st.columns([3, 2])


def on_frame(frame: av.VideoFrame) -> av.VideoFrame:  # webcam thread: no st.* in here
    out = live.process(frame.to_ndarray(format="bgr24"))
    return av.VideoFrame.from_ndarray(out, format="bgr24")


with video_col:
    ctx = webrtc_streamer(key="live", mode=WebRtcMode.SENDRECV,
                          rtc_configuration=ui.RTC_CONFIGURATION, video_frame_callback=on_frame,
                          media_stream_constraints={"video": True, "audio": False})

with verdict_col:
    if not live.continuous:
        if st.button("TRIGGER", type="primary", key="live_trigger", width="stretch",
                     disabled=not ctx.state.playing):
            live.trigger.set()

    @st.fragment(run_every=0.4)
    def verdict_panel() -> None:
        shown = live.current()
        if live.error:
            st.error(live.error)
        if not live.inspector.runners:
            st.markdown(ui.verdict_html("NO TOOL"), unsafe_allow_html=True)
            return
        if shown is None:
            label = "START CAMERA" if not ctx.state.playing else (
                "WAITING" if live.continuous else "PRESS TRIGGER")
            st.markdown(ui.verdict_html(label), unsafe_allow_html=True)
            return
        when = "" if live.continuous else f" at {datetime.fromtimestamp(shown.time):%H:%M:%S}"
        st.markdown(ui.verdict_html(shown.verdict, f"{len(shown.results)} tool(s){when}"),
                    unsafe_allow_html=True)
        for r in shown.results:
            icon = ":green[PASS]" if r.passed else f":red[FAIL {r.defect_class or ''}]"
            st.markdown(f"**{r.tool}** {icon} · score {r.smoothed:.2f} (frame {r.score:.2f}) / "
                        f"threshold {r.threshold:.2f} · {r.latency_ms:.0f} ms · {r.version}")

    verdict_panel()

# ------------------------------------------------------------------ region of interest
with st.expander("Region of interest", expanded=False):
    from streamlit_drawable_canvas import st_canvas

    tool_names = [t.name for t in all_tools]
    if not tool_names:
        st.caption("Create a tool first.")
    else:
        roi_tool = st.selectbox("Tool", tool_names, key="roi_tool")
        if st.button("Take a snapshot of the current frame", key="roi_snapshot"):
            frame = live.frames.get()
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
                        if roi_tool in live.runners:
                            live.runners[roi_tool].configure(persist=True, roi=roi)
                        else:
                            ui.store().get(roi_tool).update(roi=roi)
                        st.success(f"ROI of '{roi_tool}' saved: x {roi.x:.2f}, y {roi.y:.2f}, "
                                   f"w {roi.w:.2f}, h {roi.h:.2f}. Live now.")
                except InspectorError as exc:
                    st.error(str(exc))
