"""Capture: photos of good and defective parts from the webcam or from files, into a tool's classes."""

from __future__ import annotations

import sys
import time
from pathlib import Path

if str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av
import streamlit as st
from streamlit_webrtc import WebRtcMode, webrtc_streamer

import pages as ui
from core.datasets import IMAGE_SUFFIXES, MIN_IMAGES_PER_CLASS
from core.errors import InspectorError
from core.explanation import draw_result
from core.live import FrameHolder
from core.preprocessing import crop_roi

ui.page_setup("Capture", ":material/photo_camera:")
tool = ui.tool_picker()
if tool is None:
    st.stop()
ds = ui.dataset(tool)
classes = list(tool.config.classes)


def show_counts() -> None:
    counts = ds.counts()
    cols = st.columns(len(counts))
    anomaly = tool.config.kind == "anomaly"
    for col, (name, n) in zip(cols, counts.items()):
        if anomaly and name != "good":
            col.metric(name, n, delta="optional", delta_color="off", delta_arrow="off")
            continue
        missing = max(0, MIN_IMAGES_PER_CLASS - n)
        col.metric(name, n, delta=f"{missing} more needed" if missing else "enough to train",
                   delta_color="inverse" if missing else "normal", delta_arrow="off")
    if anomaly:
        st.caption("Anomaly tool: good photos are enough to train (20-30 of varied good parts). "
                   "A few defect photos are optional: they help suggest a threshold and estimate "
                   "accuracy.")


show_counts()

target = st.radio("Save into class", classes, horizontal=True, key="capture_class")
use_roi = st.toggle("Save only the tool's ROI (the green box)", value=True, key="capture_roi",
                    help="Train on what live inspection will see: the ROI crop. Turn off to keep "
                         "the full frame.")

camera_tab, upload_tab = st.tabs(["Webcam", "Upload photos"])

with camera_tab:
    holder: FrameHolder = st.session_state.setdefault("capture_frames", FrameHolder())
    roi = tool.config.roi

    def on_frame(frame: av.VideoFrame) -> av.VideoFrame:  # video thread: no st.* here
        image = frame.to_ndarray(format="bgr24")
        holder.put(image)
        shown = image.copy()
        draw_result(shown, roi.to_pixels(image.shape[1], image.shape[0]), "ROI", "PASS")
        return av.VideoFrame.from_ndarray(shown, format="bgr24")

    left, right = st.columns([3, 2])
    with left:
        ctx = webrtc_streamer(key="capture", mode=WebRtcMode.SENDRECV,
                              rtc_configuration=ui.RTC_CONFIGURATION,
                              video_frame_callback=on_frame,
                              media_stream_constraints={"video": True, "audio": False},
                              translations=ui.CAMERA_TRANSLATIONS)
        ui.camera_help(ctx)
    with right:
        burst_n = st.number_input("Burst: frames", 2, 200, 10, key="burst_n")
        burst_dt = st.number_input("Burst: seconds between frames", 0.1, 10.0, 0.5, step=0.1,
                                   key="burst_dt")
        snap = st.button("Snapshot", type="primary", key="snapshot", width="stretch")
        burst = st.button(f"Burst of {burst_n}", key="burst", width="stretch")

    def save(image) -> Path:
        return ds.add_image(target, crop_roi(image, roi) if use_roi else image)

    if snap or burst:
        if not ctx.state.playing:
            st.warning("Start the camera first (START under the video).")
        else:
            try:
                saved = []
                bar = st.progress(0.0, "capturing...") if burst else None
                count = 1 if snap else int(burst_n)
                seen = holder.count - 1 if snap else holder.count
                for i in range(count):
                    image = holder.wait_new(seen)
                    if image is None:
                        raise InspectorError("no frame from the camera for 2 s: is it running?")
                    seen = holder.count
                    saved.append(save(image))
                    if bar is not None:
                        bar.progress((i + 1) / count, f"captured {i + 1} of {count}")
                        if i + 1 < count:
                            time.sleep(float(burst_dt))
                same = len(saved) - len(set(saved))
                ui.flash(f"Saved {len(set(saved))} photo(s) into '{target}'."
                         + (f" {same} identical frame(s) were stored once." if same else ""))
                st.rerun()
            except InspectorError as exc:
                st.error(str(exc))

with upload_tab:
    suffixes = [s.lstrip(".") for s in IMAGE_SUFFIXES] + ["zip"]
    generation = st.session_state.setdefault("upload_generation", 0)
    files = st.file_uploader("Photos or a zip of photos", type=suffixes,
                             accept_multiple_files=True, key=f"upload_{generation}")
    if st.button(f"Add to '{target}'", key="upload_add", disabled=not files, type="primary"):
        added, problems = 0, []
        for f in files:
            n, refused = ds.add_upload(f.name, f.getvalue(), name=target)
            added, problems = added + n, problems + refused
        for problem in problems[:10]:
            st.error(problem)
        if len(problems) > 10:
            st.error(f"... and {len(problems) - 10} more problem(s)")
        if added:
            st.session_state["upload_generation"] = generation + 1  # empties the uploader
            if problems:
                st.success(f"Added {added} photo(s) to '{target}'; {len(problems)} refused.")
            else:
                ui.flash(f"Added {added} photo(s) to '{target}'.")
                st.rerun()
