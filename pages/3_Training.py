"""Training: train a new model version in the background, review it, run it as a trial on the
line, then promote it (or roll back to an older version)."""

from __future__ import annotations

import sys
from pathlib import Path

if str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd
import streamlit as st

import pages as ui
from core.backbones import available_profiles
from core.datasets import check_trainable, read_image
from core.errors import InspectorError
from core.explanation import blend_heatmap
from core.jobs import job_for, start_training
from core.live_station import LiveStation, clock, live_station
from core.tools import current_actor

MAX_MISCLASSIFIED = 12

ui.page_setup("Training")
tool = ui.tool_picker()
if tool is None:
    st.stop()

counts = ui.dataset(tool).counts()
st.caption("Photos: " + " | ".join(f"**{c}**: {n}" for c, n in counts.items()))
ui.dataset_findings(tool)  # uploaded and captured photos framed or lit differently

# ------------------------------------------------------------------ start / follow a run
job = job_for(tool)
running = job is not None and job.running
profiles = available_profiles()
names = list(profiles)
c1, c2 = st.columns([3, 1])
profile = c1.selectbox("Network profile", names,
                       index=names.index(tool.config.profile) if tool.config.profile in names else 0,
                       format_func=lambda p: f"{p}: {profiles[p].description}",
                       key=f"profile::{tool.name}", disabled=running)
trainable = True
try:
    check_trainable(counts, kind=tool.config.kind)
except InspectorError as exc:
    trainable = False
    st.warning(str(exc))
if c2.button("Start training", type="primary", disabled=running or not trainable,
             key="train_start", width="stretch"):
    try:
        if profile != tool.config.profile:
            tool.update(profile=profile)
        job = start_training(tool)
        running = True
    except InspectorError as exc:
        st.error(str(exc))


@st.fragment(run_every=1.0 if running else None)
def training_status() -> None:
    job = job_for(tool)
    if job is None:
        return
    if job.running:
        p = job.progress
        if p is None:
            st.progress(0.0, "starting (loading photos and the network)...")
        else:
            st.progress(min(1.0, p.fraction),
                        f"{p.stage}: {p.done}/{p.total} - elapsed {ui.format_seconds(p.elapsed_s)}"
                        f", about {ui.format_seconds(p.eta_s)} left")
        if st.button("Cancel training", key="train_cancel"):
            job.cancel.set()
            st.info("Cancelling after the current step...")
        st.session_state["train_was_running"] = True
        return
    if st.session_state.pop("train_was_running", False):
        st.rerun(scope="app")  # refresh the version list below
    if job.error:
        st.error(job.error)
    elif job.meta:
        v = job.meta["validation"]
        st.success(f"Trained {job.meta['id']} in {job.meta['training_seconds']:.0f} s: validation "
                   f"balanced accuracy {ui.fmt_pct(v.get('balanced_accuracy'))}. Review it below, "
                   "then run it as a trial on the line.")


training_status()

# ------------------------------------------------------------------ versions
versions = tool.versions()
st.subheader("Model versions")
if not versions:
    st.info("No model yet.")
    st.stop()

table = pd.DataFrame([{
    "Version": v["id"], "Active": "yes" if v["active"] else "",
    "Created": v.get("created", "")[:19].replace("T", " "), "Profile": v.get("profile"),
    "Images": sum(v.get("images", {}).values()),
    "Bal. accuracy": ui.fmt_pct(v["validation"].get("balanced_accuracy")),
    "ROC AUC": "-" if v["validation"].get("auroc") is None else f"{v['validation']['auroc']:.3f}",
    "Suggested threshold": round(v["suggested_threshold"], 3),
} for v in reversed(versions)])
st.dataframe(table, hide_index=True, width="stretch")

ids = [v["id"] for v in reversed(versions)]
chosen = st.selectbox("Review version", ids, key=f"review::{tool.name}")
meta = next(v for v in versions if v["id"] == chosen)


def activation(station: LiveStation, actor: str) -> None:
    """A new version runs as a trial on the line before it is promoted; an older one may be
    rolled back to at once. Every step goes through the station, audited."""
    trial = station.trial(tool.name)
    on_line = station.state.tools.get(tool.name)
    where = (f"'{tool.name}' judges on the line with {on_line.version}" if on_line
             else f"'{tool.name}' is not on the line")
    note = station.trial_note(tool.name)
    if note:
        st.warning(f"{note}: saved or reverted on Live inspection.")
    try:
        if trial is not None and trial[0].version == chosen:
            version, run = trial
            summary = run.summary() if run else None
            figures = ("it cannot run yet" if summary is None else
                       f"{summary.judged} frames judged, {summary.failed} FAIL" + (
                           "" if summary.agreement is None else
                           f", agrees with {on_line.version if on_line else 'the line'} on "
                           f"{summary.agreement:.1%} of {summary.compared} frames"))
            st.info(f"{chosen} runs as a trial on camera {tool.config.camera} since "
                    f"{clock(version.at)} (by {version.by}): {figures}. {where}; the trial's "
                    "verdicts show on Live inspection and are never sent to the line.")
            promote, stop = st.columns(2)
            if promote.button(f"Promote {chosen} to active" if on_line else
                              f"Promote {chosen} and add '{tool.name}' to the line",
                              type="primary", key="promote"):
                station.promote(tool.name, actor)
                ui.flash(f"{chosen} is the active model of '{tool.name}' and judges on the line.")
                st.rerun()
            if stop.button("Stop the trial", key="trial_stop"):
                station.stop_trial(tool.name, actor)
                ui.flash(f"The trial of {chosen} stopped; {where}.")
                st.rerun()
        elif meta["active"]:
            st.caption(f"{chosen} is active, threshold {tool.config.threshold:.3f}; {where}.")
        else:
            order = [v["id"] for v in versions]
            older = tool.config.active_version in order and (
                order.index(chosen) < order.index(tool.config.active_version))
            start, back = st.columns(2)
            if start.button(f"Run {chosen} as trial on the line (threshold "
                            f"{meta['suggested_threshold']:.3f})", type="primary",
                            key="trial_start", disabled=trial is not None,
                            help="It judges the same frames as the line, its verdicts counted "
                                 "and compared, never sent; promote it when it agrees."):
                station.start_trial(tool.name, chosen, actor)
                ui.flash(f"{chosen} runs as a trial on the line: watch it on Live inspection, "
                         "then promote it here.")
                st.rerun()
            if older and back.button(f"Roll back to {chosen} now", key="rollback",
                                     help="No trial: it was active before."):
                station.rollback(tool.name, chosen, actor)
                ui.flash(f"Rolled back '{tool.name}' to {chosen}.")
                st.rerun()
            if trial is not None:
                st.caption(f"A trial of {trial[0].version} is running: promote or stop it first.")
    except InspectorError as exc:
        st.error(str(exc))


try:
    activation(live_station(), current_actor())
except InspectorError as exc:
    st.error(str(exc))

v = meta["validation"]
m1, m2, m3, m4, m5 = st.columns(5)
m1.metric("Balanced accuracy", ui.fmt_pct(v.get("balanced_accuracy")))
m2.metric("ROC AUC", "-" if v.get("auroc") is None else f"{v['auroc']:.3f}")
m3.metric("Suggested threshold", f"{meta['suggested_threshold']:.3f}")
m4.metric("False FAIL (good parts)", v["confusion"]["false_fail"])
m5.metric("Missed defects", v["confusion"]["missed_defect"])
st.caption(f"{v.get('method', 'validation')} on {v.get('n')} photos, profile {meta['profile']}, "
           f"{meta.get('training_seconds', 0):.0f} s of training.")
if meta.get("kind") == "anomaly":
    st.caption(f"Anomaly tool: a memory of {meta.get('memory_patches', '?')} good patches. Score 0.5 "
               f"is as unusual as the most unusual good photos held out in validation; "
               + ("balanced accuracy and ROC AUC need defect photos in the dataset."
                  if v.get("balanced_accuracy") is None else
                  "the suggested threshold is the best balance on the defect photos."))

left, right = st.columns(2)
with left:
    st.markdown("**Pass/fail confusion** (rows: truth, columns: verdict)")
    matrix = v["confusion"]["matrix"]
    st.dataframe(pd.DataFrame(matrix, index=["good", "defect"], columns=["PASS", "FAIL"]),
                 width="stretch")
with right:
    st.markdown("**Class confusion** (rows: truth, columns: predicted)")
    cls = v.get("classes", {})
    if cls:
        st.dataframe(pd.DataFrame(cls["matrix"], index=cls["labels"], columns=cls["labels"]),
                     width="stretch")

if meta.get("skipped"):
    st.warning(f"{len(meta['skipped'])} unreadable photo(s) were skipped: "
               + ", ".join(Path(p).name for p in meta["skipped"][:10]))


@st.cache_data(max_entries=4, show_spinner="Computing heatmaps...")
def misclassified_views(tool_name: str, version: str, items: tuple[tuple[str, float], ...]
                        ) -> list[tuple[str, float, np.ndarray, np.ndarray]]:
    from core.inference import TrainedModel

    model = TrainedModel(ui.store().get(tool_name), version)
    found = [(p, s, read_image(Path(p))) for p, s in items]
    found = [(p, s, im) for p, s, im in found if im is not None]
    if not found:
        return []
    explained = model.explain([im for _, _, im in found])
    return [(p, s, ui.to_rgb(im), ui.to_rgb(blend_heatmap(im, e.heat)))
            for (p, s, im), e in zip(found, explained)]


wrong = meta.get("misclassified", [])
st.subheader(f"Misclassified in validation ({len(wrong)})")
if wrong:
    items = tuple((w["path"], float(w["score"])) for w in wrong[:MAX_MISCLASSIFIED])
    try:
        views = misclassified_views(tool.name, chosen, items)
    except InspectorError as exc:
        st.error(str(exc))
        views = []
    if len(views) < len(items):
        st.caption(f"{len(items) - len(views)} photo(s) were moved or deleted since training.")
    for start in range(0, len(views), 3):
        for col, (path, score, rgb, heat) in zip(st.columns(3), views[start:start + 3]):
            truth = Path(path).parent.name
            col.image([rgb, heat], width=190)
            col.caption(f"{Path(path).name}: labelled **{truth}**, defect score {score:.2f} "
                        f"(threshold {meta['suggested_threshold']:.2f})")
    if len(wrong) > MAX_MISCLASSIFIED:
        st.caption(f"... and {len(wrong) - MAX_MISCLASSIFIED} more: see 'hardest first' on the "
                   "Labeling page.")
else:
    st.caption("None: every validation photo was on the right side of the threshold.")
