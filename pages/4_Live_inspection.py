"""Live inspection: each camera of the station judged frame by frame, a large PASS/FAIL, the live
settings beside it, and what is on the line.

Everything shown here is the station's (``core.station.live_station``), not this browser's: opening the
page changes nothing, every widget shows the station's value (another browser's change appears
within a second: the widget's key names the value) and writes through the station, audited with
your name. One browser at a time
feeds a camera (START where nobody feeds, or an explicit take-over); the others show its verdicts
and its processed picture. Triggered mode judges one frame per TRIGGER (button or key T).
Under the verdict, a framing notice says when the ROI shows the parts unlike a running tool's
photos (``core.engine.framing``, one frame checked every few seconds), and what to do. Below it, the
operator corrects a tool's latest verdict: "Wrong" (key W, first camera) or the right class, or
one of its recent verdicts in the strip under it; the judged ROI goes into the tool's photos with
who said it (``core.station.line_keepers``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

import av
import pandas as pd
import streamlit as st
from streamlit_webrtc import WebRtcMode, webrtc_streamer

import pages as ui
from core.errors import InspectorError
from core.records.verdicts import ERROR, FAIL, PASS
from core.security.access import INSPECT
from core.station.line import station_line
from core.station.line_keepers import correct_verdict, learns_on_the_line, other_labels, right_label
from core.station.line_learning import ReviewQueue
from core.station.live import LiveSession
from core.station.live_station import CONTINUOUS, TRIGGERED, clock, line_summary, live_station
from core.store.tools import Tool, ToolConfig, current_actor

MODES = {"Continuous": CONTINUOUS, "Triggered": TRIGGERED}
REFUSED = "live_refused"
FRAMING_REFRESH_S = 2.0  # the framing notice's refresh (the check itself runs less often)
WRONG_KEY = "W"  # the keyboard key of "this verdict was wrong" (the first camera's)
CORRECTIONS = "live.corrections"  # where a correction's confirmation shows

ui.page_setup("Live inspection", needs=INSPECT)
try:
    with st.spinner("Loading the models of the line..."):
        station = live_station()
except InspectorError as exc:
    st.error(str(exc))
    st.stop()
browser = st.session_state.setdefault("live_browser", uuid.uuid4().hex[:6])  # this tab
actor = current_actor()
label = f"browser {browser} ({actor})"


def act(change: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """A station change from a widget; a refusal is shown on the next run, where it happened."""
    try:
        change(*args, **kwargs)
    except InspectorError as exc:
        st.session_state[REFUSED] = str(exc)


def show_refusal() -> None:
    message = st.session_state.pop(REFUSED, None)
    if message:
        st.error(message)


def station_key(name: str, value: Any) -> str:
    """A widget's key names the station's value it shows: when another browser changes the
    value, the widget is drawn anew with it, and a value this browser had sent for the old one
    (a refresh in flight) cannot come back as a change."""
    return f"{name}::{value!r}"


def layout(camera: str) -> tuple:
    """What the page's arrangement depends on: when it changes, the whole page is redrawn."""
    lineup = station.session(camera).lineup
    return (tuple(station.cameras()), station.feed_state(camera, browser), tuple(lineup.tools),
            tuple(t.tool for t in lineup.trials), tuple(sorted(station.state.trials)))


for problem in station_line().problems():
    st.sidebar.warning(problem)
for problem in station.problems():
    st.warning(problem)
show_refusal()

# ------------------------------------------------------------------ the camera: feed or view

def frame_callback(session: LiveSession):
    def on_frame(frame: av.VideoFrame) -> av.VideoFrame:  # video thread: no st.* in here
        out = session.offer(browser, frame.to_ndarray(format="bgr24"))
        return av.VideoFrame.from_ndarray(out, format="bgr24")
    return on_frame


@st.fragment(run_every=0.5)
def viewer(camera: str) -> None:
    """The feeding browser's processed picture, a few times a second."""
    session = station.session(camera)
    if session.overlay is not None:
        st.image(ui.to_rgb(session.overlay), width="stretch")
    feeder = session.feeder
    if feeder is not None:
        st.caption(f"Camera {camera} is fed by {feeder.label} since {clock(feeder.started())}: this "
                   "browser shows its verdicts and picture; its own camera is not used.")


def feed(camera: str, session: LiveSession) -> None:
    """Feed the camera from this browser (START where nobody feeds) or view another's feed."""
    state = station.feed_state(camera, browser)
    if state == "other":
        viewer(camera)
        st.button(f"Use this browser's camera for camera {camera}", key=f"take::{camera}",
                  on_click=act, args=(station.claim_feed, camera, browser, label, actor),
                  help="Its frames are judged from now on, the other browser's no longer.")
        return
    ctx = webrtc_streamer(key=f"live::{camera}", mode=WebRtcMode.SENDRECV,
                          rtc_configuration=ui.RTC_CONFIGURATION,
                          video_frame_callback=frame_callback(session),
                          on_video_ended=lambda: session.release(browser),  # STOP, page closed
                          media_stream_constraints={"video": True, "audio": False},
                          translations=ui.CAMERA_TRANSLATIONS)
    playing, was_playing = bool(ctx.state.playing), st.session_state.get(f"playing::{camera}")
    st.session_state[f"playing::{camera}"] = playing
    if playing and state == "free":
        station.claim_feed(camera, browser, label, actor)
    elif was_playing and not playing and state == "mine":
        station.release_feed(camera, browser)
    elif state == "free" and session.feeder is not None:
        st.caption(f"Camera {camera} was fed by {session.feeder.label}, silent since "
                   f"{clock(time.time() - (session.silent_for() or 0.0))}: START feeds it "
                   "from this browser.")
    ui.camera_help(ctx)


# ------------------------------------------------------------------ verdicts

VERDICT_MARKS = {PASS: ":green[PASS]", FAIL: ":red[FAIL]", ERROR: ":orange[ERROR]"}


def verdict_mark(result) -> str:
    return VERDICT_MARKS[PASS] if result.passed else f":red[FAIL {result.defect_class or ''}]"


def tool_line(result, note: str | None) -> str:
    if result.verdict == ERROR:
        return (f"**{result.tool}** {VERDICT_MARKS[ERROR]} · {result.error} · threshold "
                f"{result.threshold:.2f} · {result.version}")
    text = (f"**{result.tool}** {verdict_mark(result)} · score {result.smoothed:.2f} (frame "
            f"{result.score:.2f}) / threshold {result.threshold:.2f} · {result.latency_ms:.0f} ms · "
            f"{result.version}")
    return text + (f"  \n:orange[{note}]" if note else "")


def trial_line(result, summary) -> str:
    verdict = VERDICT_MARKS[result.verdict]
    if summary.agreement is None:
        agreement = f"{summary.judged} frames judged, nothing on the line to compare with"
    else:
        agreement = (f"agrees on {summary.agreement:.1%} of {summary.compared} frames "
                     f"({summary.compared - summary.agreed} disagreements)")
    return (f":orange[TRIAL] **{result.tool}** {result.version} {verdict} · score "
            f"{result.smoothed:.2f} / {result.threshold:.2f} · {agreement} · not sent to the line")


@st.fragment(run_every=0.4)
def verdict_panel(camera: str, arranged: tuple) -> None:
    if layout(camera) != arranged:
        st.rerun(scope="app")
    session = station.session(camera)
    fed = station.feed_state(camera, browser) != "free"  # a feed silent for long is free here
    problem = session.camera_problem() if fed else None
    if problem:  # clears by itself as soon as frames arrive again
        st.markdown(ui.verdict_html("NO FRAMES"), unsafe_allow_html=True)
        st.error(problem)
        return
    if session.error:
        st.error(session.error)
    lineup = session.lineup
    shown = session.current() if fed else None
    if not lineup.runners and not lineup.unable:
        st.markdown(ui.verdict_html("NO TOOL", "nothing on the line judges this camera"),
                    unsafe_allow_html=True)
    elif shown is None:
        label = ("START CAMERA" if not fed else
                 "WAITING" if session.continuous else "PRESS TRIGGER")
        hint = f"button TRIGGER or key {ui.TRIGGER_KEY}" if label == "PRESS TRIGGER" else ""
        st.markdown(ui.verdict_html(label, hint), unsafe_allow_html=True)
    else:
        when = "" if session.continuous else f" at {datetime.fromtimestamp(shown.time):%H:%M:%S}"
        st.markdown(ui.verdict_html(shown.verdict, f"{len(shown.results)} tool(s){when}"),
                    unsafe_allow_html=True)
        for result in shown.results:
            st.markdown(tool_line(result, station.trial_note(result.tool)))
    if shown is not None:  # the trials still running (one may have been promoted since)
        runs = {(t.tool, t.version): t for t in lineup.trials}
        for result in shown.trials:
            run = runs.get((result.tool, result.version))
            if run is not None:
                st.markdown(trial_line(result, run.summary()))


@st.fragment(run_every=FRAMING_REFRESH_S)
def framing_notice(camera: str) -> None:
    """Whether the camera's ROI shows the parts as each running tool's photos do: the station
    checks one frame every few seconds (``station.framing``), never the video thread."""
    session = station.session(camera)
    if session.feeder is None:
        return
    for runner in session.lineup.runners:
        findings = station.framing.findings(runner.tool, session.frames, runner.config.roi)
        for finding in findings or ():
            st.warning(f"**{runner.tool.name}**, framing: {finding.message}")


def correct(camera: str, tool: str, label: str, at: float | None = None) -> None:
    """The operator's correction of the tool's latest verdict on the camera (or of its recent
    verdict judged at ``at``)."""
    try:
        record = correct_verdict(station.session(camera), tool, label, actor, at)
    except InspectorError as exc:
        ui.flash(str(exc), CORRECTIONS, error=True)
        return
    ui.flash(f"Thank you: that part is in the photos of {tool} as '{record.label}' (by "
             f"{record.labelled_by}); the next training learns from it.", CORRECTIONS)


def recent_verdicts(session: LiveSession, tool: Tool) -> None:
    """The tool's last parts (``LiveSession.recent``), newest first, each with its own
    correction: for a wrong verdict noticed after the next part came."""
    parts = session.recent.of(tool.name)
    if not parts:
        return
    st.caption(f"Recent verdicts of {tool.name}")
    queue, classes = ReviewQueue(tool), tool.config.classes
    for part in parts:
        picture, said, choices = st.columns([1, 3, 3], vertical_alignment="center")
        picture.image(ui.to_rgb(part.crop), width=48)
        said.markdown(f"{datetime.fromtimestamp(part.time):%H:%M:%S} {verdict_mark(part.result)} · "
                      f"score {part.result.smoothed:.2f}")
        done = queue.correction(session.camera, part.time)
        if done is not None and done.label is not None:
            choices.markdown(f":green[corrected: {done.label}] ({done.labelled_by})")
            continue
        wrong = right_label(part.result, classes)
        for name in ([wrong] if wrong else []) + other_labels(part.result, classes):
            choices.button(f"Wrong: it is {name}" if name == wrong else f"It is {name}",
                           key=f"recent::{session.camera}::{tool.name}::{part.time!r}::{name}",
                           on_click=correct, args=(session.camera, tool.name, name, part.time),
                           width="stretch")


@st.fragment(run_every=1.0)
def corrections(camera: str, first: bool) -> None:
    """Say a tool's latest verdict was wrong (or name the right class): one click, or key W;
    or one of its recent verdicts, in the strip under it."""
    ui.show_flash(CORRECTIONS)
    session = station.session(camera)
    shown = session.current() if station.feed_state(camera, browser) != "free" else None
    judged = {r.tool: r for r in (shown.results if shown else ()) if r.verdict != ERROR}
    runners = {n: r for n, r in session.runners.items() if learns_on_the_line(r)}
    names = [n for n in runners if n in judged or session.recent.of(n)]
    if not names:
        return
    tool = names[0] if len(names) == 1 else st.selectbox(
        "Correct the verdict of", names, key=f"correct_tool::{camera}")
    result, classes = judged.get(tool), runners[tool].tool.config.classes
    wrong = right_label(result, classes) if result is not None else None
    if wrong is not None:  # the whole width: the label must be read at a glance
        st.button(f"Wrong: it is {wrong}", key=f"wrong::{camera}", type="primary", width="stretch",
                  shortcut=WRONG_KEY if first else None, on_click=correct, args=(camera, tool, wrong),
                  help=f"The latest verdict of {tool} ({result.verdict}) was wrong: its ROI goes "
                       "into the tool's photos with your name"
                       + (f" (key {WRONG_KEY})." if first else "."))
    others = other_labels(result, classes) if result is not None else []
    for column, name in zip(st.columns(len(others)) if others else (), others):
        column.button(f"It is {name}", key=f"is::{camera}::{name}", on_click=correct,
                      args=(camera, tool, name), width="stretch")
    recent_verdicts(session, runners[tool].tool)


# ------------------------------------------------------------------ live settings

SHOWN = {"threshold": lambda c: float(c.threshold), "smoothing": lambda c: int(c.smoothing),
         "tta": lambda c: bool(c.tta.enabled)}  # a tool setting as its widget shows it
MODE_LABELS = {v: k for k, v in MODES.items()}


def mode_key(camera: str) -> str:
    return station_key(f"mode::{camera}", station.mode(camera))


def heatmaps_key(camera: str) -> str:
    return station_key(f"heatmaps::{camera}", station.heatmaps(camera))


def setting_key(tool: str, setting: str, settings: ToolConfig) -> str:
    return station_key(f"{setting}::{tool}", SHOWN[setting](settings))


def change_mode(camera: str, key: str) -> None:
    if key == mode_key(camera):  # else drawn from a value the station no longer has
        act(station.set_mode, camera, MODES[st.session_state[key]], actor)


def change_heatmaps(camera: str, key: str) -> None:
    if key == heatmaps_key(camera):
        act(station.set_heatmaps, camera, st.session_state[key], actor)


def try_setting(tool: str, setting: str, key: str) -> None:
    try:
        if key != setting_key(tool, setting, station.settings(tool)):
            return  # the widget showed a value the station no longer has (changed elsewhere)
    except InspectorError as exc:  # the tool left the line meanwhile
        st.session_state[REFUSED] = str(exc)
        return
    value = st.session_state[key]
    if setting == "tta":
        value = replace(station.settings(tool).tta, enabled=value)
    act(station.try_settings, tool, actor, **{setting: value})
    if REFUSED in st.session_state:  # e.g. an operator's role: show the station's value again
        st.session_state[key] = SHOWN[setting](station.settings(tool))


def trigger_all() -> None:
    for camera in station.cameras():
        if station.mode(camera) == TRIGGERED:
            station.trigger(camera)


@st.fragment(run_every=1.0)
def controls(camera: str, first: bool) -> None:
    """Mode, trigger and the settings of the camera's tools, as the station has them now."""
    show_refusal()
    mode, key = MODE_LABELS[station.mode(camera)], mode_key(camera)
    st.radio("Mode", list(MODES), index=list(MODES).index(mode), key=key, horizontal=True,
             on_change=change_mode, args=(camera, key),
             help="Triggered judges one frame per press of TRIGGER (or a trigger from the line) "
                  "and holds the verdict.")
    if first and any(station.mode(c) == TRIGGERED for c in station.cameras()):
        # one trigger judges the next frame of every triggered camera; the T key (or a pedal) too
        st.button("TRIGGER", type="primary", key="live_trigger", width="stretch",
                  shortcut=ui.TRIGGER_KEY, on_click=trigger_all,
                  help=f"Judge the next frame (key {ui.TRIGGER_KEY}).")
    key = heatmaps_key(camera)
    st.toggle("Show Grad-CAM heatmaps", station.heatmaps(camera), key=key,
              on_change=change_heatmaps, args=(camera, key),
              help="Anomaly tools show their anomaly map: where the part looks unusual.")
    tools = station.session(camera).lineup.tools
    if not tools:
        return
    tool = st.selectbox("Settings of", tools, key=f"tune::{camera}")
    try:
        settings = station.settings(tool)
    except InspectorError:  # it left the line since the lineup was read: the next run redraws
        return
    key = setting_key(tool, "threshold", settings)
    st.slider("Threshold (FAIL at or above)", 0.0, 1.0, float(settings.threshold), step=0.01,
              key=key, on_change=try_setting, args=(tool, "threshold", key))
    key = setting_key(tool, "smoothing", settings)
    st.slider("Smoothing (frames averaged)", 1, max(30, settings.smoothing),
              int(settings.smoothing), key=key, on_change=try_setting, args=(tool, "smoothing", key))
    key = setting_key(tool, "tta", settings)
    st.toggle("Test-time augmentation (steadier, slower)", bool(settings.tta.enabled), key=key,
              on_change=try_setting, args=(tool, "tta", key))
    note = station.trial_note(tool)
    if note is None:
        st.caption("A change judges at once, as TRIAL until someone saves it to the tool.")
        return
    st.warning(note)
    save, revert = st.columns(2)
    save.button("Save to the tool", key=f"save::{tool}", type="primary",
                on_click=act, args=(station.save_settings, tool, actor))
    revert.button("Revert", key=f"revert::{tool}", on_click=act,
                  args=(station.revert_settings, tool, actor))


cameras = station.cameras()
for index, camera in enumerate(cameras):
    session = station.session(camera)
    if len(cameras) > 1:
        st.subheader(f"Camera {camera}", anchor=False)
    video_col, verdict_col, control_col = st.columns([4, 5, 3])  # verdict legible from afar
    with video_col:
        feed(camera, session)
    with verdict_col:
        verdict_panel(camera, layout(camera))
        framing_notice(camera)
        corrections(camera, first=index == 0)
    with control_col:
        controls(camera, first=index == 0)

# ------------------------------------------------------------------ the line

st.subheader("On the line", anchor=False)
tools = ui.store().all()
summary = line_summary()
st.dataframe(pd.DataFrame([{"Tool": t.name, "Camera": t.config.camera, "Kind": t.config.kind,
                            "Active version": t.config.active_version or "none",
                            "Line": summary.get(t.name, "")} for t in tools]),
             hide_index=True, width="stretch")
on_line = sorted(station.state.tools)
addable = [t.name for t in tools if t.name not in on_line and t.config.active_version
           and t.config.enabled]
left, right = st.columns(2)
with left:
    if addable:
        added = st.selectbox("Tool not on the line", addable, key="line_add_tool",
                             help="Trained tools judge on the line only once someone adds them.")
        st.button("Add to line", key="line_add", on_click=act,
                  args=(station.add_to_line, added, actor))
with right:
    if on_line:
        removed = st.selectbox("Tool on the line", on_line, key="line_remove_tool")
        st.button("Remove from line", key="line_remove", on_click=act,
                  args=(station.remove_from_line, removed, actor))


@st.fragment(run_every=2.0)
def trials() -> None:
    for name, version in sorted(station.state.trials.items()):
        found = station.trial(name)
        run = found[1] if found else None
        beside = station.state.tools.get(name)
        summary = run.summary() if run else None
        figures = ("not running" if summary is None else
                   f"{summary.judged} frames judged, {summary.failed} FAIL"
                   + ("" if summary.agreement is None else
                      f", agrees with {beside.version if beside else 'the line'} on "
                      f"{summary.agreement:.1%} of {summary.compared}"))
        st.markdown(f":orange[TRIAL] **{name}** {version.version} since {clock(version.at)} by "
                    f"{version.by}: {figures}")
        if summary and summary.disagreements:
            st.caption("Latest disagreements: " + "; ".join(
                f"{clock(d.time)} line {d.line_verdict} {d.line_score:.2f} / trial "
                f"{d.trial_verdict} {d.trial_score:.2f}" for d in summary.disagreements[-3:]))
        promote, stop = st.columns(2)
        promote.button(f"Promote {version.version} to active" if beside else
                       f"Promote {version.version} and add {name} to the line",
                       key=f"promote::{name}", type="primary", on_click=act,
                       args=(station.promote, name, actor))
        stop.button("Stop the trial", key=f"trial_stop::{name}", on_click=act,
                    args=(station.stop_trial, name, actor))


if station.state.trials:
    st.subheader("Trials", anchor=False)
    trials()
st.caption("Region of interest: draw it on the Capture page; a saved ROI judges from the next "
           "frame. New versions go through a trial: Training page, 'Run as trial on the line'.")
