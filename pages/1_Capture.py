"""Capture: set the tool's ROI on the live camera picture, then photograph parts through it (or
upload photos taken elsewhere) into the tool's classes.

The camera stream sits outside the fragments below: a ROI change, a Snapshot, a Burst or a deleted
thumbnail reruns only its own fragment, so the stream keeps running. (A full run keeps it too as
long as no element moves above it: confirmations have fixed slots, see ``pages.show_flash``.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import av
import cv2
import streamlit as st
from PIL import Image
from streamlit_webrtc import WebRtcMode, webrtc_streamer

import pages as ui
from core.engine.explanation import draw_result
from core.engine.framing import check_camera
from core.engine.kinds import NONE, OPTIONAL, REQUIRED, get_kind
from core.errors import InspectorError
from core.security.access import CONFIGURE
from core.station.live import FrameHolder
from core.store.datasets import IMAGE_SUFFIXES, MIN_IMAGES_PER_CLASS, read_image
from core.store.tools import ROI

CANVAS_WIDTH = 400  # px: half the page at 1280x720 with the sidebar open
THUMBNAILS = 10  # latest photos shown, newest first
THUMBNAIL_SIDE = 120  # px sent to the browser per thumbnail
FRAMING_EVERY_S = 3.0  # the framing check's refresh while the camera runs
ROI_STEP, PHOTO_STEP = "1 · Region of interest", "2 · Take photos"

ui.page_setup("Capture", needs=CONFIGURE)
tool = ui.tool_picker()
if tool is None:
    st.stop()
ds = ui.dataset(tool)
classes = list(tool.config.classes)


@dataclass
class CameraView:
    """What the page shares with the video thread: the latest raw frame, the ROI to draw."""

    frames: FrameHolder = field(default_factory=FrameHolder)
    roi: ROI = field(default_factory=ROI)


view: CameraView = st.session_state.setdefault("capture_view", CameraView())
# The ROI being edited starts as the saved one, and again whenever the saved one changes.
saved_roi = tool.config.roi
base, draft = st.session_state.get(f"roi_draft::{tool.name}", (None, None))
if base != saved_roi:
    base, draft = saved_roi, saved_roi
    st.session_state[f"roi_draft::{tool.name}"] = (base, draft)
view.roi = draft


def set_draft(roi: ROI, picture_size: tuple[int, int] | None) -> None:
    """Edit the ROI: the stream and the canvas show it, the numeric fields follow."""
    st.session_state[f"roi_draft::{tool.name}"] = (saved_roi, roi)
    view.roi = roi
    if picture_size:
        for name, value in zip("xywh", roi_numbers(roi, picture_size)):
            st.session_state[f"roi_{name}::{tool.name}"] = value


def roi_numbers(roi: ROI, picture_size: tuple[int, int]) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = roi.to_pixels(*picture_size)
    return x0, y0, x1 - x0, y1 - y0


def on_frame(frame: av.VideoFrame) -> av.VideoFrame:  # video thread: no st.* here
    image = frame.to_ndarray(format="bgr24")
    view.frames.put(image)
    shown = image.copy()
    draw_result(shown, view.roi.to_pixels(image.shape[1], image.shape[0]), "ROI", "PASS")
    return av.VideoFrame.from_ndarray(shown, format="bgr24")


# ------------------------------------------------------------------ ROI on the camera picture

def new_picture() -> None:
    picture = view.frames.get()
    if picture is not None:
        st.session_state["roi_picture"] = picture
        set_draft(view.roi, (picture.shape[1], picture.shape[0]))


def from_numbers(picture_size: tuple[int, int]) -> None:
    x, y, w, h = (st.session_state[f"roi_{name}::{tool.name}"] for name in "xywh")
    set_draft(ROI.from_pixels(x, y, x + w, y + h, *picture_size), picture_size)


def roi_panel(playing: bool) -> None:
    """Step 1 (a fragment; it polls while it waits for the camera's first picture)."""
    picture = st.session_state.get("roi_picture")
    if picture is None:
        if playing and view.frames.get() is not None:
            new_picture()
            st.rerun(scope="app")  # once, to stop this panel waiting for a picture
        st.info("Press START under the video: the ROI is drawn on the camera's picture. "
                f"Saved ROI: {describe(saved_roi)}.")
        return
    from streamlit_drawable_canvas import st_canvas

    fh, fw = picture.shape[:2]
    size = (fw, fh)
    canvas_size = (CANVAS_WIDTH, int(round(CANVAS_WIDTH * fh / fw)))
    actions = st.container()  # above the picture, in view at 1280x720; filled once it is read
    background = Image.fromarray(cv2.resize(ui.to_rgb(picture), canvas_size,
                                            interpolation=cv2.INTER_AREA))
    canvas = st_canvas(fill_color=ui.ROI_FILL, stroke_width=2,
                       stroke_color=ui.ROI_COLOUR, background_image=background,
                       drawing_mode="rect", initial_drawing=ui.roi_drawing(view.roi, canvas_size),
                       width=canvas_size[0], height=canvas_size[1], key=f"roi_canvas::{tool.name}")
    seen_key = f"roi_canvas_seen::{tool.name}"
    sent = json.dumps(canvas.json_data, sort_keys=True)
    if sent != st.session_state.get(seen_key):  # the canvas sent something new
        st.session_state[seen_key] = sent
        drawn = ui.roi_from_canvas(canvas.json_data, canvas_size, size)
        if drawn is not None and drawn.to_pixels(*canvas_size) != view.roi.to_pixels(*canvas_size):
            set_draft(drawn, size)
    for name, value in zip("xywh", roi_numbers(view.roi, size)):
        st.session_state.setdefault(f"roi_{name}::{tool.name}", value)
    limits = {"x": fw - 1, "y": fh - 1, "w": fw, "h": fh}
    labels = {"x": "x (px)", "y": "y (px)", "w": "width (px)", "h": "height (px)"}
    for column, name in zip(st.columns(4), "xywh"):
        column.number_input(labels[name], 0 if name in "xy" else 8, limits[name], step=1,
                            key=f"roi_{name}::{tool.name}", on_change=from_numbers, args=(size,))
    st.caption("Drag a box around the part, or turn on **Edit** in the picture's toolbar (on "
               "hover) to move or resize the green box; fine-tune it with the numbers, then "
               "**Save ROI**.")
    with actions:
        roi_actions(playing, size)


def roi_actions(playing: bool, size: tuple[int, int]) -> None:
    """Save, Undo and New picture, their confirmation and whether the ROI shown is saved."""
    fw, fh = size
    save, undo, again = st.columns([1.2, 1, 1.3])
    if save.button("Save ROI", type="primary", key="roi_save", width="stretch",
                   disabled=view.roi == saved_roi):
        try:
            tool.update(roi=view.roi)
            x, y, w, h = roi_numbers(view.roi, size)
            ui.flash(f"ROI of '{tool.name}' saved: {w}x{h} px at x {x}, y {y} of the {fw}x{fh} "
                     "picture. Photos are cropped to it, and live inspection judges this crop.",
                     "capture.roi")
            st.rerun(scope="app")  # the page's saved ROI, the photo step's buttons
        except InspectorError as exc:
            st.error(str(exc))
    undo.button("Undo", key="roi_undo", width="stretch", disabled=view.roi == saved_roi,
                on_click=set_draft, args=(saved_roi, size))
    again.button("New picture", key="roi_picture_again", width="stretch", disabled=not playing,
                 on_click=new_picture, help="Take the camera's current picture to draw on.")
    ui.show_flash("capture.roi")
    if view.roi != saved_roi:
        st.caption(f":orange[Not saved yet.] Saved ROI: {describe(saved_roi, size)}.")


def describe(roi: ROI, picture_size: tuple[int, int] | None = None) -> str:
    if roi == ROI():
        return "the whole picture (not set yet)"
    if picture_size is None:
        return f"x {roi.x:.0%}, y {roi.y:.0%}, {roi.w:.0%} x {roi.h:.0%} of the picture"
    x, y, w, h = roi_numbers(roi, picture_size)
    return f"{w}x{h} px at x {x}, y {y}"


# ------------------------------------------------------------------ photos through the ROI

@st.fragment
def photo_panel(playing: bool) -> None:
    """Step 2: the class, Snapshot and Burst, their confirmation, the latest photos."""
    target = st.radio("Save into class", classes, horizontal=True, key="capture_class")
    unsaved = view.roi != saved_roi
    burst_n = int(st.session_state.get("burst_n", 10))
    snap_col, burst_col, settings_col = st.columns([1.1, 1.1, 0.9])
    blocked = not playing or unsaved
    snap = snap_col.button("Snapshot", type="primary", key="snapshot", width="stretch",
                           disabled=blocked)
    burst = burst_col.button(f"Burst of {burst_n}", key="burst", width="stretch", disabled=blocked)
    with settings_col.popover("Settings", width="stretch", help="Burst: how many, how often"):
        st.number_input("Photos per burst", 2, 200, 10, key="burst_n")
        st.number_input("Seconds between photos", 0.1, 10.0, 0.5, step=0.1, key="burst_dt")
    if unsaved:
        st.caption(":orange[The ROI was changed but not saved:] save it (or undo) in step 1 "
                   "before taking photos, so they are cropped as live inspection will crop.")
    elif not playing:
        st.caption("Press START under the video to take photos.")
    elif saved_roi == ROI():
        st.caption("The ROI is the whole picture: set it in step 1 first, unless the part fills it.")
    if snap or burst:  # handled before what it changes is drawn below: counts, thumbnails
        bar = st.progress(0.0, "capturing...") if burst else None
        try:
            saved = ds.capture(view.frames, target, saved_roi, 1 if snap else burst_n,
                               float(st.session_state.get("burst_dt", 0.5)),
                               (lambda done, n: bar.progress(done / n, f"captured {done} of {n}"))
                               if bar else None)
            height, width = read_image(saved[0]).shape[:2]
            ui.flash(f"Saved {len(saved)} photo(s) into '{target}' at "
                     f"{datetime.now():%H:%M:%S}: {width}x{height} px, the ROI crop.",
                     "capture.photos")
        except InspectorError as exc:
            ui.flash(str(exc), "capture.photos", error=True)
        if bar is not None:
            bar.empty()
    ui.show_flash("capture.photos")
    counts = " · ".join(f"{c} **{n}**" for c, n in ds.counts().items())
    needed = {REQUIRED: f"Train from {MIN_IMAGES_PER_CLASS} per class; 20-30 varied parts are better.",
              OPTIONAL: f"Train from {MIN_IMAGES_PER_CLASS} good ones; defect photos optional; "
                        "20-30 varied parts are better.",
              NONE: "A reading tool needs no photos: say what it must read on the Training page."}
    st.caption(f"{counts}. {needed[get_kind(tool.config.kind).photos]}")
    thumbnails()


def delete_photo(path: Path) -> None:
    try:
        ds.delete([path])
        ui.flash(f"Deleted a '{path.parent.name}' photo ({path.name}).", "capture.photos")
    except InspectorError as exc:
        ui.flash(str(exc), "capture.photos", error=True)


def thumbnails() -> None:
    """The latest photos, newest first, each with its class and a button to delete it."""
    recent = sorted(ds.files(), key=lambda p: p.name, reverse=True)[:THUMBNAILS]
    if not recent:
        st.caption("No photo yet: the photos you take appear here, newest first.")
        return
    for start in range(0, len(recent), 5):
        for column, path in zip(st.columns(5), recent[start:start + 5]):
            image = read_image(path)
            if image is not None:
                scale = THUMBNAIL_SIDE / max(image.shape[:2])
                column.image(ui.to_rgb(cv2.resize(image, None, fx=scale, fy=scale,
                                                  interpolation=cv2.INTER_AREA)),
                             caption=path.parent.name, width="stretch")
            column.button("Delete", key=f"thumb_delete::{path.name}", type="tertiary",
                          help=f"Delete {path.name} (a wrong shot)", on_click=delete_photo,
                          args=(path,))


# ------------------------------------------------------------------ does the ROI look like the photos?

def framing_panel(playing: bool) -> None:
    """The framing check of the ROI being edited (a fragment refreshed while the camera runs)."""
    frame = view.frames.get() if playing else None
    if frame is None:
        return
    try:
        findings = check_camera(tool, frame, view.roi)
    except InspectorError as exc:
        st.error(str(exc))
        return
    ui.show_findings(findings, "Framing check: the camera ROI shows the parts as the tool's "
                               "photos do." if sum(ds.counts().values()) else
                     "Framing check: no photo yet to compare with; the first ones set the framing.")


# ------------------------------------------------------------------ the page

# keyed and tracked, so a rerun never sends the engineer back to the first tab
camera_tab, upload_tab = st.tabs(["Camera", "Upload photos"], key="capture_source", on_change="rerun")

with camera_tab:
    left, right = st.columns(2)
    with left:
        ctx = webrtc_streamer(key="capture", mode=WebRtcMode.SENDRECV,
                              rtc_configuration=ui.RTC_CONFIGURATION,
                              video_frame_callback=on_frame,
                              media_stream_constraints={"video": True, "audio": False},
                              translations=ui.CAMERA_TRANSLATIONS)
        ui.camera_help(ctx)
        playing = bool(ctx.state.playing)
        st.fragment(framing_panel, run_every=FRAMING_EVERY_S if playing else None)(playing)
    with right:
        step = st.segmented_control(
            "Step", [ROI_STEP, PHOTO_STEP], key=f"capture_step::{tool.name}",
            default=ROI_STEP if saved_roi == ROI() else PHOTO_STEP, label_visibility="collapsed")
        if step == PHOTO_STEP:
            photo_panel(playing)
        else:
            waiting = playing and "roi_picture" not in st.session_state
            st.fragment(roi_panel, run_every=1.0 if waiting else None)(playing)

with upload_tab:
    upload_target = st.radio("Add to class", classes, horizontal=True, key="upload_class")
    suffixes = [s.lstrip(".") for s in IMAGE_SUFFIXES] + ["zip"]
    generation = st.session_state.setdefault("upload_generation", 0)
    files = st.file_uploader("Photos or a zip of photos", type=suffixes,
                             accept_multiple_files=True, key=f"upload_{generation}")
    add = st.button(f"Add to '{upload_target}'", key="upload_add", disabled=not files,
                    type="primary")
    ui.show_flash("capture.upload")
    if add:
        added, problems = 0, []
        for f in files:
            n, refused = ds.add_upload(f.name, f.getvalue(), name=upload_target)
            added, problems = added + n, problems + refused
        for problem in problems[:10]:
            st.error(problem)
        if len(problems) > 10:
            st.error(f"... and {len(problems) - 10} more problem(s)")
        if added:
            st.session_state["upload_generation"] = generation + 1  # empties the uploader
            message = f"Added {added} photo(s) to '{upload_target}'"
            if problems:
                st.success(f"{message}; {len(problems)} refused (above).")
            else:
                ui.flash(f"{message}. With the camera running, the Camera tab's framing check "
                         "says whether they look like what the ROI shows.", "capture.upload")
                st.rerun()
