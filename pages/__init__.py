"""Shared Streamlit helpers for the pages (Streamlit does not list ``__init__.py`` as a page).

Only user-interface matters live here: page setup and style (the app icon is a file served by
the station itself: a ``:material/...:`` page icon makes the browser fetch it from a Google font
host), the login and each page's role gate (the rules are ``core.security.access`` and
``core.security.users``; ``core`` checks them again at every change, whatever widget or callback
calls it), confirmations, the tool picker, the verdict banner, the ROI canvas, the framing
findings and formatting. Every rule lives in ``core`` (``core.station.live``,
``core.station.jobs``, ``core.engine.review``, ``core.station.guidance``,
``core.store.datasets``...).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from core.engine.framing import ORIGIN, Finding, check_dataset
from core.errors import InspectorError
from core.records.verdicts import ERROR, FAIL, PASS
from core.security.access import User, identify_callers, refusal, station_account
from core.security.https import exposure_problem
from core.security.users import OPEN_STATION, Login, UserStore, browser_user
from core.station.line import station_line
from core.store.datasets import ToolDataset
from core.store.settings import load_settings
from core.store.tools import ROI, Tool, ToolStore

APP_ICON = str(Path(__file__).resolve().parents[1] / "assets" / "inspector.png")
CURRENT_TOOL = "current_tool"
_LOGIN = "_login"
RTC_CONFIGURATION = {"iceServers": []}  # local station: no STUN/TURN, nothing leaves the LAN
TRIGGER_KEY = "T"  # the keyboard key (or a foot pedal programmed to send it) of TRIGGER
CAMERA_TRANSLATIONS = {  # what the stream widget says when the browser gets no camera
    "device_access_denied": "The browser refused the camera: allow camera access for this "
                            "page (camera icon in the address bar), then press START",
    "device_not_available": "No camera found or it is busy: plug the USB camera in, close "
                            "other programs using it, then press START",
    "media_api_not_available": "This browser gives no camera to this address: open the "
                               "station at http://localhost:8501 (or over HTTPS)",
}

# The stream widget shows a refused or missing camera as the browser's raw error after START
# (its translations cover only the device picker): say what each one means and what to do.
CAMERA_HELP = ("No picture after START? **NotAllowedError**: the browser refused the camera: "
               "allow camera access for this page (camera icon in the address bar), then START. "
               "**NotFoundError** or **NotReadableError**: no camera found or it is busy: plug "
               "the USB camera in, close other programs using it, then START.")


def camera_help(ctx: Any) -> None:
    """Under a stream that is not playing: what the browser's camera errors mean."""
    if not ctx.state.playing:
        st.caption(CAMERA_HELP)


_CSS = """
<style>
.verdict {border-radius: 14px; padding: 0.3em 0.4em; text-align: center; font-weight: 800;
          font-size: clamp(56px, 7vw, 150px); line-height: 1.1; color: white;
          letter-spacing: 0.04em; margin-bottom: 0.2em; white-space: nowrap; overflow: hidden;}
.verdict.pass {background: #1f9d3a;}
.verdict.fail {background: #d62828;}
.verdict.error {background: #e07b00;}
.verdict.idle {background: #555; font-size: clamp(28px, 3vw, 64px); padding: 1em 0.4em;}
.verdict-detail {font-size: 1.35rem; text-align: center; margin-bottom: 0.4em;}
/* at 1280x720 the default 6rem above the title pushes the page's controls below the fold */
[data-testid="stMainBlockContainer"] {padding-top: 2.5rem;}
</style>
"""


def page_setup(title: str, needs: str | None = None, icon: str = APP_ICON) -> User:
    """Set the page up and say who is here; the page stops, saying why and with the login, when
    nobody may see it or the user's role lacks ``needs`` (a ``core.security.access`` permission)."""
    st.set_page_config(page_title=f"{title} - Shopfloor Inspector", page_icon=icon, layout="wide")
    st.markdown(_CSS, unsafe_allow_html=True)
    st.title(title)
    st.session_state[_PAGE] = title
    try:
        exposed = exposure_problem(st.get_option("server.address"), st.get_option("server.sslCertFile"),
                                   lambda: user_store().count() > 0)
        user = None if exposed else _arrive()
    except InspectorError as exc:  # e.g. no history database: nobody can be checked
        st.error(f"{exc} (nobody can log in until this is fixed: see docs/SECURITY.md)")
        st.stop()
    if exposed:
        st.error(exposed)
        st.stop()
    show_flash()
    if user is OPEN_STATION:
        st.warning("This station has no user yet: anyone who reaches it may change everything. "
                   "Create its first admin from the station's shell: "
                   "`inspector users add NAME --role admin`.")
    if user is None or (needs and not user.may(needs)):
        st.error(refusal(needs, user) if needs else "Log in (on the left) to use the station.")
        st.stop()
    return user


def _arrive() -> User | None:
    """Who is here now: this browser's login (dropped once idle too long, refreshed otherwise)
    or who the station lets in without one; draws the login or logout in the sidebar."""
    settings, store = load_settings(), user_store()  # station_line: the history, its audit
    login = st.session_state.get(_LOGIN)
    if login is not None and login.expired(settings.session_timeout_min):
        del st.session_state[_LOGIN]
        flash(f"Your session timed out after {settings.session_timeout_min:g} min without "
              f"activity: log in again.")
    elif login is not None:
        st.session_state[_LOGIN] = login.touched()
    user = browser_user(st.session_state.get(_LOGIN), store, settings)
    login = st.session_state.get(_LOGIN)
    if login is not None and user is not None and login.user.name == user.name:
        st.sidebar.markdown(f"Logged in as **{user.name}** ({user.role})")
        st.sidebar.button("Log out", key="logout", on_click=st.session_state.pop, args=(_LOGIN,))
        return user
    st.session_state.pop(_LOGIN, None)  # a user removed meanwhile is out at once
    if user is not OPEN_STATION:
        _login_box(store, user)
    return user


def _login_box(store: UserStore, user: User | None) -> None:
    """User name and password (or an operator's PIN); ``user`` is who the browser is without."""
    with st.sidebar.form("login", clear_on_submit=True):
        if user is not None:
            st.caption(f"Without a login: {user.role} view ({user.name}).")
        name = st.text_input("User", key="login_name")
        secret = st.text_input("Password (operators: or PIN)", type="password", key="login_secret")
        if st.form_submit_button("Log in", key="login_submit"):
            try:
                user = store.authenticate(name.strip(), secret)
            except InspectorError as exc:
                st.error(str(exc))
            else:
                st.session_state[_LOGIN] = Login(user, time.time())
                st.rerun()


def user_store() -> UserStore:
    """The station's users, in its history database (the line opens it once per process)."""
    return UserStore(station_line().history.engine)


def _caller() -> User | None:
    """Who acts, for ``core.security.access``: in a page's run or a widget's callback, this browser's
    user; in the station's own threads (video, line, watchers), the station itself."""
    if get_script_run_ctx(suppress_warning=True) is None:
        return station_account()
    try:
        return browser_user(st.session_state.get(_LOGIN), user_store(), load_settings())
    except InspectorError:
        return None


identify_callers(_caller)


_PAGE = "_page"
_FLASH = "_flash"


def flash(message: str, area: str | None = None, error: bool = False) -> None:
    """Confirm an action (or say why it failed) where the user looks: ``area`` (default: the top
    of the page) shows it until dismissed or replaced by the area's next message."""
    st.session_state.setdefault(_FLASH, {})[area or st.session_state.get(_PAGE, "")] = (message,
                                                                                         error)


def show_flash(area: str | None = None) -> None:
    """The area's confirmation, with a button to dismiss it. The slot is there even when empty,
    so nothing below it moves when a message comes or goes: a moved element is remounted by the
    browser, which stops a camera stream and sends tabs back to their first one."""
    area = area or st.session_state.get(_PAGE, "")
    slot = st.container()
    messages = st.session_state.get(_FLASH, {})
    if messages.get(area):
        message, error = messages[area]
        text, close = slot.columns([6, 1], vertical_alignment="center")
        (text.error if error else text.success)(message)
        close.button("Dismiss", key=f"dismiss::{area}", type="tertiary",
                     on_click=messages.pop, args=(area, None))


def store() -> ToolStore:
    """The station's tools (re-read every time: INSPECTOR_HOME is resolved per call)."""
    return ToolStore()


def tool_picker(require_model: bool = False, where: Any = None) -> Tool | None:
    """Choose the tool this page works on; the choice follows the engineer across pages."""
    where = where or st.sidebar
    tools = store().all()
    if require_model:
        tools = [t for t in tools if t.config.active_version]
    if not tools:
        st.info("No trained tool yet: train one on the Training page." if require_model
                else "No tool yet: create one on the Home page.")
        return None
    names = [t.name for t in tools]
    current = st.session_state.get(CURRENT_TOOL)
    index = names.index(current) if current in names else 0
    name = where.selectbox("Tool", names, index=index, key=f"picker_{require_model}")
    st.session_state[CURRENT_TOOL] = name
    return tools[names.index(name)]


def dataset(tool: Tool) -> ToolDataset:
    """The tool's photos, one folder per class."""
    return ToolDataset(tool.images_dir, tool.config.classes)


def roi_from_canvas(json_data: dict | None, canvas_size: tuple[int, int],
                    frame_size: tuple[int, int]) -> ROI | None:
    """The last rectangle drawn on a canvas showing the frame, as a normalised ROI."""
    rects = [o for o in (json_data or {}).get("objects", []) if o.get("type") in ("rect", "Rect")]
    if not rects:
        return None
    o = rects[-1]
    (cw, ch), (fw, fh) = canvas_size, frame_size
    w = o.get("width", 0) * o.get("scaleX", 1)
    h = o.get("height", 0) * o.get("scaleY", 1)
    left, top = o.get("left", 0), o.get("top", 0)
    if o.get("originX") == "center":
        left -= w / 2
    if o.get("originY") == "center":
        top -= h / 2
    sx, sy = fw / cw, fh / ch
    if w < 2 or h < 2:
        return None
    return ROI.from_pixels(left * sx, top * sy, (left + w) * sx, (top + h) * sy, fw, fh)


ROI_COLOUR = "#00ff00"  # the ROI box, on the canvas as on the stream (core.engine.explanation's PASS green)
ROI_FILL = "rgba(0, 255, 0, 0.12)"


def roi_drawing(roi: ROI, canvas_size: tuple[int, int]) -> dict:
    """A canvas drawing (``st_canvas(initial_drawing=...)``) of one ROI box to move or resize."""
    cw, ch = canvas_size
    x0, y0, x1, y1 = roi.to_pixels(cw, ch)
    return {"objects": [{
        "type": "Rect", "left": x0, "top": y0, "width": x1 - x0, "height": y1 - y0,
        "originX": "left", "originY": "top", "scaleX": 1, "scaleY": 1, "angle": 0,
        "fill": ROI_FILL, "stroke": ROI_COLOUR, "strokeWidth": 2,
        "strokeUniform": True, "lockRotation": True}]}


def show_findings(findings: list[Finding], ok: str | None = None) -> None:
    """Framing findings (``core.engine.framing``): differences as warnings, advice as information;
    ``ok`` as a caption when there is none."""
    for finding in findings:
        (st.info if finding.topic == ORIGIN else st.warning)(finding.message)
    if not findings and ok:
        st.caption(ok)


def dataset_findings(tool: Tool) -> None:
    """Do the tool's uploaded and captured photos look alike? (The Training page's check.)"""
    try:
        show_findings(check_dataset(tool))
    except InspectorError as exc:
        st.error(str(exc))


def verdict_html(verdict: str, detail: str = "") -> str:
    css = {PASS: "pass", FAIL: "fail", ERROR: "error"}.get(verdict, "idle")
    extra = f'<div class="verdict-detail">{detail}</div>' if detail else ""
    return f'<div class="verdict {css}" data-testid="verdict">{verdict}</div>{extra}'


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "estimating..."
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def to_rgb(image: np.ndarray) -> np.ndarray:
    return image[:, :, ::-1]
