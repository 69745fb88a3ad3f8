"""Labeling: the crops the line kept for review (hardest first, a click or a key labels one into
the tool's photos, with undo), then the tool's photos: fix wrong labels, delete bad shots.

The review queue is ``core.station.line_learning.ReviewQueue``: frames the station was unsure of, FAIL
images sent from the History page, and the verdicts operators corrected on Live inspection
(already in the photos, shown for a check).
Keys label the hardest crop: 1, 2... its classes in order, X discards it, U undoes the latest
label.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import streamlit as st

import pages as ui
from core.engine.review import OK, UNCERTAIN, UNREADABLE, WRONG, hardest_first, with_heatmap
from core.errors import InspectorError
from core.security.access import CONFIGURE
from core.station.line_learning import CORRECTED, DISCARD, KeptFrame, ReviewQueue
from core.store.datasets import read_image

PAGE_SIZE = 24
COLUMNS = 6
ACTIONS = "labeling.actions"  # where the confirmations of Move and Delete show
QUEUE_SHOWN = 6  # kept crops shown at once, hardest first
REVIEWED = "labeling.review"  # where the review queue's confirmations show
DISCARD_KEY, UNDO_KEY = "X", "U"

ui.page_setup("Labeling", needs=CONFIGURE)
tool = ui.tool_picker()
if tool is None:
    st.stop()
ds = ui.dataset(tool)
classes = list(tool.config.classes)



# ------------------------------------------------------------------ the review queue
def review_action(change, frame_id: str, *args: str) -> None:
    """Label or undo from a button; the confirmation (or refusal) shows above the queue."""
    try:
        record = change(frame_id, *args)
    except InspectorError as exc:
        ui.flash(str(exc), REVIEWED, error=True)
        return
    done = f"'{record.label}'" if record.label else "waiting again"
    ui.flash(f"Kept crop {record.id}: {done}" + (f" (in the photos as {record.dataset_path})"
                                                if record.dataset_path else "."), REVIEWED)


def kept_caption(record: KeptFrame) -> str:
    when = f"{datetime.fromtimestamp(record.time):%d %b %H:%M}"
    boundary = "" if record.centre is None else f" (the line's boundary {record.centre:.2f})"
    caption = (f"score {record.score:.2f} / {record.threshold:.2f}{boundary} · {record.reason} · "
               f"{record.version} · {when}")
    if record.label is not None:
        caption = f"**{record.label}** by {record.labelled_by} · " + caption
    return caption


def shown_crop(queue: ReviewQueue, record: KeptFrame, heatmap: bool) -> np.ndarray:
    """A kept crop, with the active model's heatmap if asked (computed once per crop)."""
    crop = queue.crop(record.id)
    if not heatmap:
        return crop
    cache = st.session_state.setdefault("review_heat", {})
    key = (tool.name, tool.config.active_version, record.id)
    if key not in cache:
        cache[key] = with_heatmap(tool, crop)
    return cache[key]


def review_queue(queue: ReviewQueue) -> None:
    pending, labelled = queue.pending(), queue.labelled()
    if not pending and not labelled:
        return
    st.subheader(f"Kept on the line: {len(pending)} waiting", anchor=False)
    ui.show_flash(REVIEWED)
    heatmaps = bool(tool.config.active_version) and st.toggle(
        "Show heatmaps", key="review_heatmaps",
        help=f"Where {tool.config.active_version} sees the defect (computed for the crops shown).")
    labels = [*classes, DISCARD]
    for rank, (col, record) in enumerate(zip(st.columns(QUEUE_SHOWN), pending[:QUEUE_SHOWN])):
        with col:
            st.image(ui.to_rgb(shown_crop(queue, record, heatmaps)), width="stretch")
            st.caption(kept_caption(record))
            for number, label in enumerate(labels, start=1):
                key = (DISCARD_KEY if label == DISCARD else str(number)) if rank == 0 else None
                st.button(label, key=f"review::{record.id}::{label}", width="stretch",
                          shortcut=key, on_click=review_action,
                          args=(queue.label, record.id, label),
                          help=f"Key {key}" if key else None)
    if labelled:
        with st.expander(f"Labelled lately ({len(labelled)})", expanded=not pending):
            for rank, record in enumerate(labelled[:QUEUE_SHOWN]):
                picture, words, undo = st.columns([1, 4, 1], vertical_alignment="center")
                picture.image(ui.to_rgb(queue.crop(record.id)), width=80)
                corrected = " · corrected on the line" if record.reason == CORRECTED else ""
                words.markdown(kept_caption(record) + corrected)
                undo.button("Undo", key=f"review_undo::{record.id}",
                            shortcut=UNDO_KEY if rank == 0 else None,
                            on_click=review_action, args=(queue.undo, record.id),
                            help=f"Key {UNDO_KEY}" if rank == 0 else None)


review_queue(ReviewQueue(tool))

st.subheader("Photos", anchor=False)
counts = ds.counts()
st.caption(" | ".join(f"**{c}**: {n}" for c, n in counts.items()))

f1, f2, f3 = st.columns([2, 2, 1])
shown_class = f1.selectbox("Show class", ["all"] + classes, key="label_filter")
orders = ["newest first", "oldest first"]
if tool.config.active_version:
    orders.append("hardest first (model)")
order = f2.selectbox("Order", orders, key="label_order",
                     help="Hardest first scores every photo with the active model: photos on the "
                          "wrong side of the threshold come first, then those closest to it.")
files = ds.files(None if shown_class == "all" else shown_class)

scores: dict[Path, tuple[float, str]] = {}
if order.startswith("hardest"):
    key = (tool.name, tool.config.active_version, tool.config.threshold, tuple(files))
    cached = st.session_state.get("label_scores")
    if not cached or cached[0] != key:
        try:
            with st.spinner(f"Scoring {len(files)} photo(s) with {tool.config.active_version}..."):
                ranked = hardest_first(tool, files)
            st.session_state["label_scores"] = (key, ranked)
        except InspectorError as exc:
            st.error(str(exc))
            ranked = [(p, float("nan"), OK) for p in files]
    else:
        ranked = cached[1]
    files = [p for p, _, _ in ranked]
    scores = {p: (s, status) for p, s, status in ranked}
elif order == "newest first":
    files = sorted(files, key=lambda p: p.name, reverse=True)
else:
    files = sorted(files, key=lambda p: p.name)

n_pages = max(1, -(-len(files) // PAGE_SIZE))
page = int(f3.number_input(f"Page (of {n_pages})", 1, n_pages, 1, key="label_page"))
visible = files[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]

if not files:
    st.info("No photos here yet: capture some on the Capture page.")
    st.stop()

# ------------------------------------------------------------------ actions on the selection
selected = [p for p in visible if st.session_state.get(f"sel::{p}")]
a1, a2, a3, a4 = st.columns([2, 1, 1, 1])
move_to = a1.selectbox("Move selected to", classes, key="label_move_to")
if a2.button(f"Move {len(selected)}", key="label_move", disabled=not selected, type="primary"):
    try:
        ds.move(selected, move_to)
        for p in selected:
            st.session_state.pop(f"sel::{p}", None)
        ui.flash(f"Moved {len(selected)} photo(s) to '{move_to}'.", ACTIONS)
        st.rerun()
    except InspectorError as exc:
        st.error(str(exc))
if a3.button(f"Delete {len(selected)}...", key="label_delete", disabled=not selected):
    st.session_state["label_confirm_delete"] = [str(p) for p in selected]
if a4.button("Select page", key="label_select_all"):
    for p in visible:
        st.session_state[f"sel::{p}"] = True
    st.rerun()

pending = st.session_state.get("label_confirm_delete")
if pending:
    st.warning(f"Delete {len(pending)} photo(s) for good?")
    y, n = st.columns(2)
    if y.button("Yes, delete", key="label_delete_yes", type="primary"):
        try:
            ds.delete([Path(p) for p in pending])
            ui.flash(f"Deleted {len(pending)} photo(s).", ACTIONS)
        except InspectorError as exc:
            st.error(str(exc))
        for p in pending:
            st.session_state.pop(f"sel::{p}", None)
        st.session_state.pop("label_confirm_delete", None)
        st.rerun()
    if n.button("Cancel", key="label_delete_no"):
        st.session_state.pop("label_confirm_delete", None)
        st.rerun()

ui.show_flash(ACTIONS)

# ------------------------------------------------------------------ the grid
BADGE = {WRONG: ":red[wrong side]", UNCERTAIN: ":orange[uncertain]", OK: "",
         UNREADABLE: ":red[unreadable]"}
for start in range(0, len(visible), COLUMNS):
    for col, path in zip(st.columns(COLUMNS), visible[start:start + COLUMNS]):
        with col:
            image = read_image(path)
            if image is None:
                st.error(f"{path.name}: unreadable")
            else:
                st.image(ui.to_rgb(image), width="stretch")
            caption = f"**{path.parent.name}**"
            if path in scores:
                score, status = scores[path]
                caption += (f" {BADGE[status]}" if status == UNREADABLE
                            else f" · defect {score:.2f} {BADGE[status]}")
            st.checkbox(caption, key=f"sel::{path}", help=path.name)
