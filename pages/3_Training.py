"""Training: train a new model version in the background, review it, run it as a trial on the
line, then promote it (or roll back to an older version)."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

import pages as ui
from core.engine.backbones import available_profiles
from core.engine.comparison import Comparison, compare_with_active
from core.engine.evaluation import ANY_DEFECT, merge_photos, new_photo_rates, photo_classes, score_new_photos
from core.engine.explanation import blend_heatmap
from core.engine.kinds import EXACT, PATTERN, TRIGGER, Expectation, get_kind
from core.engine.metrics import (Rates, escape_rate_threshold, held_out_scores, operating_curve, percent,
                                 rates_at, rates_of)
from core.engine.training import TrainingOptions, train_tool
from core.errors import InspectorError
from core.records.verdicts import PASS, verdict_of
from core.security.access import CONFIGURE
from core.station.jobs import job_for, start_training
from core.station.line_learning import new_photos_note
from core.station.live_station import LiveStation, clock, live_station
from core.store.datasets import IMAGE_SUFFIXES, check_trainable, read_image
from core.store.tools import VersionMeta, acting_as, current_actor

MAX_MISCLASSIFIED = 12
NO_DEFECTS = "no defect photos: add some to measure how many defects are caught"
GOOD_COLOUR, DEFECT_COLOUR = "#1f9d3a", "#d62828"  # PASS green, FAIL red, as on the line

ui.page_setup("Training", needs=CONFIGURE)
tool = ui.tool_picker()
if tool is None:
    st.stop()

counts = ui.dataset(tool).counts()
st.caption("Photos: " + " | ".join(f"**{c}**: {n}" for c, n in counts.items()))
ui.dataset_findings(tool)  # uploaded and captured photos framed or lit differently

# ------------------------------------------------------------------ start / follow a run
kind = get_kind(tool.config.kind)
job = job_for(tool)
running = job is not None and job.running


def reading_setup() -> None:
    """A reading tool is set up, not trained: what it must read, saved as a new version (the
    first one is made active; a later one runs as a trial like a retrained model)."""
    st.caption(f"'{tool.name}' {kind.title}: no photos, no training; what it must read is its setup.")
    expect = Expectation.from_json(tool.config.expect) if tool.config.expect else None
    modes = {EXACT: "exactly this text", PATTERN: "text matching a pattern (regular expression)",
             TRIGGER: "the value sent with each trigger (e.g. the order's serial)"}
    c1, c2 = st.columns([2, 3])
    mode = c1.radio("It must read", list(modes), format_func=modes.get, key=f"expect_mode::{tool.name}",
                    index=list(modes).index(expect.mode) if expect else 0)
    value = c2.text_input("Expected text" if mode == EXACT else "Pattern", disabled=mode == TRIGGER,
                          key=f"expect_value::{tool.name}", value=expect.value if expect else "",
                          placeholder=r"LOT\d{6}" if mode == PATTERN else "")
    if st.button("Save setup", type="primary", key="setup_save"):
        try:
            tool.update(expect=Expectation(mode, "" if mode == TRIGGER else value).to_json())
            meta = train_tool(tool, options=TrainingOptions(activate=not tool.config.active_version))
            shown = Expectation.from_json(meta.details["expect"]).shown()
            ui.flash(f"Saved {meta.id}: '{tool.name}' expects {shown}.")
            st.rerun()
        except InspectorError as exc:
            st.error(str(exc))


if not kind.learns:
    reading_setup()
else:
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
        rates = rates_of(job.meta.validation)
        st.success(f"Trained {job.meta.id} in {job.meta.training_seconds:.0f} s. On held-out "
                   f"photos: good parts passed {rates.good_passed.describe()}; defects caught "
                   f"{rates.defects_caught.describe() or NO_DEFECTS}. Review it below, compare it "
                   "with the active version, then run it as a trial on the line.")


training_status()

# ------------------------------------------------------------------ learning on the line
# (photos labelled on Labeling or corrected on Live since the active version: core.station.line_learning)
from_the_line = new_photos_note(tool)
if from_the_line:
    st.info(f"{from_the_line} to use them (kept and corrected on the line, labelled).")

# ------------------------------------------------------------------ versions
versions = tool.versions()
st.subheader("Model versions")
if not versions:
    st.info("No model yet.")
    st.stop()


def version_row(v: VersionMeta) -> dict:
    """A learnt version's row: its held-out figures at its suggested threshold."""
    rates = rates_of(v.validation)
    return {
        "Version": v.id, "Active": "yes" if v.id == tool.config.active_version else "",
        "Created": v.created[:19].replace("T", " "), "Profile": v.profile,
        "Images": sum(v.images.values()),
        "Good passed": percent(rates.good_passed.share) if rates.good_passed.total else "-",
        "Defects caught": (percent(rates.defects_caught.share) if rates.defects_caught.total
                           else "no defect photos"),
        "Bal. accuracy": ("needs defect photos" if v.validation.balanced_accuracy is None
                          else ui.fmt_pct(v.validation.balanced_accuracy)),
        "ROC AUC": ("needs defect photos" if v.validation.auroc is None
                    else f"{v.validation.auroc:.3f}"),
        "Suggested threshold": round(v.suggested_threshold, 3),
    }


def setup_row(v: VersionMeta) -> dict:
    """A reading version's row: the setup it holds."""
    return {"Version": v.id, "Active": "yes" if v.id == tool.config.active_version else "",
            "Created": v.created[:19].replace("T", " "),
            "Expects": Expectation.from_json(v.details.get("expect")).shown()}


st.dataframe(pd.DataFrame([(version_row if kind.learns else setup_row)(v) for v in reversed(versions)]),
             hide_index=True, width="stretch")
if kind.learns:
    st.caption("Good passed and defects caught: held-out photos of the training set at each "
               "version's suggested threshold.")

ids = [v.id for v in reversed(versions)]
chosen = st.selectbox("Review version", ids, key=f"review::{tool.name}")
meta = next(v for v in versions if v.id == chosen)
active = chosen == tool.config.active_version


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
        elif active:
            st.caption(f"{chosen} is active, threshold {tool.config.threshold:.3f}; {where}.")
        else:
            order = [v.id for v in versions]
            older = tool.config.active_version in order and (
                order.index(chosen) < order.index(tool.config.active_version))
            start, back = st.columns(2)
            if start.button(f"Run {chosen} as trial on the line (threshold "
                            f"{meta.suggested_threshold:.3f})", type="primary",
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


# ------------------------------------------------------------------ compare before serving
def comparison_table(comparison: Comparison) -> pd.DataFrame:
    rows = []
    for role, figures in (("new", comparison.candidate), ("active", comparison.active)):
        rows.append({
            "Version": f"{figures.version} ({role})", "Threshold": round(figures.threshold, 3),
            "Bal. accuracy": ("needs both sides" if figures.balanced_accuracy is None
                              else ui.fmt_pct(figures.balanced_accuracy)),
            "Misses": f"{figures.misses} of {comparison.defects}",
            "False rejects": f"{figures.false_rejects} of {comparison.good}",
            "Scored": figures.scored_as,
        })
    return pd.DataFrame(rows)


def compare_before_serving() -> None:
    """The chosen new version beside the active one on the photos the active one never saw;
    serving stays the trial's and the promotion's below."""
    active = tool.config.active_version
    if chosen == active or active is None or not kind.learns:
        return
    key = f"comparison::{tool.name}"
    if st.button(f"Compare {chosen} with the active {active} before serving", key="compare",
                 help="Both scored on the photos added since the active version (the review "
                      "queue's labelled photos among them); the new one by its held-out scores."):
        try:
            st.session_state[key] = compare_with_active(tool, chosen)
        except InspectorError as exc:
            st.error(str(exc))
    shown: Comparison | None = st.session_state.get(key)
    if shown is None or (shown.candidate.version, shown.active.version) != (chosen, active):
        return
    st.dataframe(comparison_table(shown), hide_index=True, width="stretch")
    st.caption(f"The same {len(shown.photos)} photos for both: the {shown.good} good and "
               f"{shown.defects} defect photos {active} was not trained on ({shown.corrections} of "
               "them labelled from the line). Each version at its own threshold. Run the new one as "
               "a trial below; it serves only once promoted.")


compare_before_serving()

try:
    activation(live_station(), current_actor())
except InspectorError as exc:
    st.error(str(exc))
if not kind.learns:
    st.stop()  # a reading version is its setup: no validation, no threshold to choose

# ------------------------------------------------------------------ validation, as rates


def show_rates(rates: Rates, no_good: str = "no good photos", no_defects: str = NO_DEFECTS) -> None:
    st.markdown(f"- **Good parts passed:** {rates.good_passed.describe() or no_good}\n"
                f"- **Defects caught:** {rates.defects_caught.describe() or no_defects}")


v = meta.validation
threshold = tool.threshold_of(chosen)  # what the version judges at (a trial: its suggested one)
in_force = "the tool's threshold" if active else "its suggested threshold, which a trial runs it at"
held_out = held_out_scores(v)
st.subheader("Validation on held-out photos")
if held_out is not None:
    rates, measured = rates_at(*held_out, threshold), threshold
else:  # saved before the scores were kept: its figures at the threshold they were measured at
    rates = rates_of(v)
    measured = rates.threshold if rates.threshold is not None else meta.suggested_threshold
    if abs(measured - threshold) > 1e-9:
        in_force = f"the suggested one; this version kept no scores to show them at {threshold:.3f}"
st.markdown(f"At threshold **{measured:.3f}** ({in_force}):")
show_rates(rates)
st.caption(f"Held-out photos of the training set ({v.method or 'validation'}, "
           f"{v.n} photos): each was judged by a model that had not seen it, but they share "
           "the training's days, light and parts. A few dozen photos give wide ranges: the 95 % "
           "range is where the rate on many more parts like these most likely lies. To check on "
           "photos the tool has never seen, use **Test on new photos** below. "
           f"Profile {meta.profile}, {meta.training_seconds:.0f} s of training.")
figures = [("Threshold", f"{threshold:.3f}"), ("Suggested threshold", f"{meta.suggested_threshold:.3f}")]
if v.balanced_accuracy is not None:  # both good and defect photos were validated
    figures += [("Balanced accuracy", ui.fmt_pct(v.balanced_accuracy)), ("ROC AUC", f"{v.auroc:.3f}")]
if v.named_defect_share is not None:
    figures.append(("Defect named right", ui.fmt_pct(v.named_defect_share)))
for column, (label, value) in zip(st.columns(len(figures)), figures):
    column.metric(label, value)

if "anomaly" in meta.details:  # a memory of good patches: what it holds
    settings, patches = meta.details["anomaly"], meta.details.get("memory_patches")
    size = f" ({patches:,} in all)" if patches else ""
    if settings.get("local_memory_size"):
        memory = (f"It keeps patches of the good photos in two memories{size}: a global one that "
                  "judges the texture and shape of the whole part, and a local one of small cells "
                  "that catches small defects (a pin hole, a spur, a thin crack) that the whole-part "
                  "view would average away.")
    else:
        memory = f"It keeps patches of the good photos in one memory{size} (an earlier kind of version)."
    scale = (" A score of 0.5 means more unusual than good parts almost ever are; a typical good "
             "part scores about 0.05." if "good_spreads" in settings else
             " A score of 0.5 means more unusual than good parts almost ever are.")
    defects = ("Defect photos are not learnt from: they only measure how many defects are caught."
               if rates.defects_caught.total else
               "Add defect photos to measure how many defects it catches, or test some below under "
               "Test on new photos (it still learns from the good ones only).")
    st.caption(f"Anomaly tool: it learns what good parts look like from good photos only. {memory}"
               f"{scale} {defects}")

cls = v.classes
left, right = st.columns(2) if cls else (st.container(), None)
with left:
    st.markdown("**Pass/fail confusion** (rows: truth, columns: verdict)")
    matrix = v.confusion.matrix
    st.dataframe(pd.DataFrame(matrix, index=["good", "defect"], columns=["PASS", "FAIL"]),
                 width="content" if right is None else "stretch")
if right is not None:
    with right:
        st.markdown("**Class confusion** (rows: truth, columns: predicted)")
        st.dataframe(pd.DataFrame(cls.matrix, index=cls.labels, columns=cls.labels),
                     width="stretch")


def operating_chart(is_defect: np.ndarray, scores: np.ndarray, marks: dict[str, float]) -> alt.Chart:
    """Good parts passed and defects caught at every threshold, the thresholds of ``marks``
    drawn as vertical rules."""
    curve = pd.DataFrame(operating_curve(is_defect, scores)).rename(
        columns={"good_pass": "good parts passed", "defect_fail": "defects caught"})
    long = curve.melt(id_vars="threshold", var_name="share of", value_name="share")
    lines = alt.Chart(long).mark_line().encode(
        x=alt.X("threshold:Q", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("share:Q", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1]), title=None),
        color=alt.Color("share of:N", scale=alt.Scale(
            domain=["good parts passed", "defects caught"], range=[GOOD_COLOUR, DEFECT_COLOUR])),
        tooltip=[alt.Tooltip("threshold:Q", format=".2f"), "share of:N",
                 alt.Tooltip("share:Q", format=".0%")])
    marked = alt.Chart(pd.DataFrame({"threshold": list(marks.values()), "mark": list(marks),
                                     "row": [12 + 14 * i for i in range(len(marks))]}))
    rules = marked.mark_rule(strokeDash=[5, 3], color="#333").encode(
        x="threshold:Q", tooltip=["mark:N", alt.Tooltip("threshold:Q", format=".3f")])
    labels = marked.mark_text(align="left", dx=4, color="#333").encode(
        x="threshold:Q", y=alt.Y("row:Q", scale=None), text="mark:N")
    return alt.layer(lines, rules, labels).properties(height=260)


def use_threshold(new: float, actor: str) -> None:
    """Save a threshold to the tool as ``actor`` (``Tool.update`` records it in the audit trail,
    and the line judges with it from the next frame if the tool is on it). A button's callback
    runs before the page, so before the page names who is acting: the name comes with it."""
    try:
        with acting_as(actor):
            saved = ui.store().get(tool.name)  # as it is now: another page may have changed it
            before = saved.config.threshold
            saved.update(threshold=new)
        ui.flash(f"Threshold of '{tool.name}' set to {new:.3f} (was {before:.3f}), recorded as "
                 f"changed by {actor}.", "training.threshold")
    except InspectorError as exc:
        ui.flash(str(exc), "training.threshold", error=True)


if held_out is None:
    st.caption("This version was saved before held-out scores were kept: train again for the "
               "operating curve and a threshold chosen by the defects that may pass.")
else:
    is_defect, scores = held_out
    st.markdown("**Choose the threshold by the defects that may pass**")
    escape = st.number_input("Defects that may pass, at most (%)", 0, 50, 5, step=1,
                             key=f"escape::{tool.name}",
                             help="The highest threshold (the most good parts passed) at which "
                                  "at most this share of the held-out defect photos pass.")
    marks = {"threshold now": threshold}
    try:
        suggested = escape_rate_threshold(is_defect, scores, escape / 100)
    except InspectorError as exc:
        suggested = None
        st.warning(str(exc))
    if suggested is not None:
        marks[f"at most {escape} % may pass"] = suggested
        st.markdown(f"At most {escape} % of defects may pass: threshold **{suggested:.3f}**")
        show_rates(rates_at(is_defect, scores, suggested))
        st.caption("Chosen on these same photos, so on new parts a few more defects may pass: "
                   "check it with Test on new photos.")
        if active:
            st.button("Use this threshold", key="use_threshold", type="primary",
                      disabled=abs(suggested - tool.config.threshold) < 1e-9,
                      on_click=use_threshold, args=(suggested, current_actor()),
                      help=f"Save {suggested:.3f} as the threshold of '{tool.name}'.")
        else:
            st.caption(f"The threshold is the active version's: {chosen} starts at its suggested "
                       f"threshold {meta.suggested_threshold:.3f} in a trial and when "
                       "promoted; choose it here once it is active.")
    ui.show_flash("training.threshold")
    if is_defect.any():
        st.markdown("**Operating curve** (held-out photos): a higher threshold passes more good "
                    "parts and catches fewer defects")
        st.altair_chart(operating_chart(is_defect, scores, marks), width="stretch")

if meta.skipped:
    st.warning(f"{len(meta.skipped)} unreadable photo(s) were skipped: "
               + ", ".join(Path(p).name for p in meta.skipped[:10]))


@st.cache_data(max_entries=4, show_spinner="Computing heatmaps...")
def misclassified_views(tool_name: str, version: str, items: tuple[tuple[str, float], ...]
                        ) -> list[tuple[str, float, np.ndarray, np.ndarray]]:
    from core.engine.inference import TrainedModel

    model = TrainedModel(ui.store().get(tool_name), version)
    found = [(p, s, read_image(Path(p))) for p, s in items]
    found = [(p, s, im) for p, s, im in found if im is not None]
    if not found:
        return []
    explained = model.explain([im for _, _, im in found])
    return [(p, s, ui.to_rgb(im), ui.to_rgb(blend_heatmap(im, e.heat)))
            for (p, s, im), e in zip(found, explained)]


wrong = meta.misclassified
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
                        f"(threshold {meta.suggested_threshold:.2f})")
    if len(wrong) > MAX_MISCLASSIFIED:
        st.caption(f"... and {len(wrong) - MAX_MISCLASSIFIED} more: see 'hardest first' on the "
                   "Labeling page.")
else:
    st.caption("None: every validation photo was on the right side of the threshold.")

# ------------------------------------------------------------------ photos it has never seen

st.subheader("Test on new photos")
st.caption(f"Photos of parts the tool has never seen, cropped like its own photos (the ROI), "
           f"scored by {chosen} at threshold {threshold:.3f}: what validation promised, checked on "
           "new parts. Choose what the photos show, upload them, score them; add other classes "
           "the same way. They are not added to the dataset.")
tested_key = f"newphotos::{tool.name}::{chosen}"
tested = st.session_state.get(tested_key, {"photos": [], "skipped": []})
generation = st.session_state.setdefault("newphotos_generation", 0)
shows_col, files_col = st.columns([1, 3])
shows = shows_col.radio("These photos show", photo_classes(tool), key=f"newphotos_class::{tool.name}",
                        format_func=lambda c: "a defect (any kind)" if c == ANY_DEFECT else c)
files = files_col.file_uploader("New photos", type=[s.lstrip(".") for s in IMAGE_SUFFIXES],
                                accept_multiple_files=True, key=f"newphotos_{generation}")
if st.button(f"Score these photos as '{shows}'", key="newphotos_score", disabled=not files,
             type="primary"):
    try:
        with st.spinner(f"Scoring {len(files)} photo(s)..."):
            scored, skipped = score_new_photos(tool, chosen, [(f.name, f.getvalue()) for f in files],
                                               shows)
        st.session_state[tested_key] = {"photos": merge_photos(tested["photos"], scored),
                                        "skipped": skipped}
        st.session_state["newphotos_generation"] = generation + 1  # empties the uploader
        st.rerun()
    except InspectorError as exc:
        st.error(str(exc))
for message in tested["skipped"]:
    st.warning(message)
if tested["photos"]:
    photos = tested["photos"]
    st.markdown(f"At threshold **{threshold:.3f}**, on {len(photos)} new photo(s), never seen in "
                "training:")
    show_rates(new_photo_rates(photos, threshold), no_good="no good photo tested yet",
               no_defects="no defect photo tested yet")
    st.dataframe(pd.DataFrame([{
        "Photo": p.name, "Shows": p.shows, "Defect score": round(p.score, 3),
        "Verdict": verdict_of(p.score, threshold),
        "Right": "yes" if (verdict_of(p.score, threshold) == PASS) != p.is_defect else "NO"}
        for p in photos]),
        hide_index=True, width="stretch")
    if st.button("Clear the tested photos", key="newphotos_clear"):
        del st.session_state[tested_key]
        st.rerun()
