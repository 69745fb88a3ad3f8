"""History: what the line did, for the manager (counts, yield, defects, scores, events, changes)."""

from __future__ import annotations

from datetime import date, timedelta

import altair as alt
import pandas as pd
import streamlit as st

import pages as ui
from core.errors import InspectorError
from core.records.history import PART_RULE, EventFilter, open_history
from core.records.report_options import DEFAULT_SHIFTS, PERIODS
from core.records.reports import (day_range, defect_pareto, events_csv, first_pass_yield, local_zone,
                                  operator_corrections, score_distribution, yield_over_time)
from core.security.access import REPORT
from core.station.line_learning import ReviewQueue

REVIEW_SENT = "history.review"  # where sending a FAIL image for review is confirmed


def send_for_review(event: pd.Series, jpeg: bytes) -> None:
    """A FAIL image into its tool's review queue (``core.station.line_learning``)."""
    try:
        tool = ui.store().get(event["tool"])
        ReviewQueue(tool).add_fail_image(int(event["id"]), jpeg, event["score"], event["threshold"],
                                         event["version"], event["time"].timestamp(), event["camera"])
    except InspectorError as exc:
        ui.flash(str(exc), REVIEW_SENT, error=True)
        return
    ui.flash(f"Sent to the review queue of {tool.name}: an engineer labels it on the Labeling "
             "page.", REVIEW_SENT)


ui.page_setup("History", needs=REPORT)
try:
    store = open_history()
    names = store.names()
except InspectorError as exc:
    st.error(str(exc))
    st.stop()

zone = local_zone()
today = date.today()
with st.sidebar:
    picked = st.date_input("Dates", (today - timedelta(days=6), today), key="history_dates")
    first, last = (picked[0], picked[-1]) if isinstance(picked, tuple) and picked else (today, today)
    stations = st.multiselect("Stations", names["station"], placeholder="All stations",
                              key="history_stations")
    tools = st.multiselect("Tools", names["tool"], placeholder="All tools", key="history_tools")
    by = st.radio("Per", PERIODS, index=2 if last > first else 0, horizontal=True, key="history_by")
    shifts = st.text_input("Shift starts", ",".join(DEFAULT_SHIFTS), key="history_shifts",
                           help="Local times HH:MM, comma separated; a shift ends where the next starts")

since, until = day_range(first, last, zone)
where = EventFilter(since=since, until=until, tools=tuple(tools), stations=tuple(stations))
try:
    over_time = yield_over_time(store, where, by=by, shifts=shifts.split(","), zone=zone)
except InspectorError as exc:
    st.error(str(exc))
    st.stop()

parts, failed = int(over_time["parts"].sum()), int(over_time["failed"].sum())
triggered = int(over_time["triggered"].sum())
fpy = first_pass_yield(store, where)
cols = st.columns(4)
cols[0].metric("Tool verdicts", f"{parts:,}", help="One per tool per part judged; what a part is: "
               "see 'What counts as a part' below")
cols[1].metric("PASS", f"{parts - failed:,}")
cols[2].metric("FAIL", f"{failed:,}")
cols[3].metric("Yield", ui.fmt_pct((parts - failed) / triggered if triggered else None),
               help="PASS share of the triggered parts: continuous mode does not count good parts "
                    "one by one")
if parts > triggered:
    st.caption(f"{parts - triggered:,} FAIL part(s) seen in continuous mode count in FAIL and in "
               "the defects, not in the yield: continuous mode does not count the good parts.")
with st.expander("What counts as a part"):
    for cause, meaning in PART_RULE.items():
        st.markdown(f"- **{cause}** event: {meaning}.")
if not parts:
    st.info("No part inspected in this range: widen the dates or clear the filters. Parts are "
            "triggered verdicts and defective parts seen in continuous mode, recorded by the Live "
            "inspection page or the headless station.")

overview, defects, scores, recent, audit = st.tabs(
    ["Yield over time", "Defects", "Scores", "Events", "Tool changes"])
with overview:
    if parts:
        left, right = st.columns(2)
        counts = over_time.melt(id_vars=["period", "tool"], value_vars=["passed", "failed"],
                                var_name="verdict", value_name="count")
        counts["verdict"] = counts["verdict"].map({"passed": "PASS", "failed": "FAIL"})
        verdict_colors = alt.Scale(domain=["PASS", "FAIL"], range=["#1f9d3a", "#d62828"])
        left.altair_chart(alt.Chart(counts).mark_bar().encode(
            x=alt.X("period:T", title=None), y=alt.Y("sum(count):Q", title="tool verdicts"),
            color=alt.Color("verdict:N", scale=verdict_colors),
            tooltip=["period:T", "tool", "verdict", "count"],
        ).properties(title=f"PASS / FAIL per {by}", height=260), width="stretch")
        right.altair_chart(alt.Chart(over_time).mark_line(point=True).encode(
            x=alt.X("period:T", title=None), y=alt.Y("yield:Q", axis=alt.Axis(format="%")),
            color="tool:N", tooltip=["period:T", "tool", "parts", "failed",
                                     alt.Tooltip("yield:Q", format=".1%")],
        ).properties(title=f"Yield per tool per {by}", height=260), width="stretch")
    if not fpy.empty:
        st.markdown("**First-pass yield per station**: the share of triggered parts on which every "
                    "tool passed (a part spans the tools of its camera; FAIL parts seen in "
                    "continuous mode count as failed, not in the yield)")
        st.dataframe(fpy.assign(fpy=[ui.fmt_pct(v if triggered else None) for v, triggered
                                     in zip(fpy["fpy"], fpy["triggered"])]).rename(columns={
            "station": "Station", "parts": "Parts", "passed": "Passed first time",
            "failed": "Failed", "triggered": "Triggered", "fpy": "First-pass yield"}), hide_index=True)

with defects:
    pareto = defect_pareto(store, where)
    if pareto.empty:
        st.caption("No FAIL in this range.")
    else:
        pareto["defect"] = pareto["tool"] + ": " + pareto["defect_class"]
        bars = alt.Chart(pareto).mark_bar(color="#d62828").encode(
            x=alt.X("defect:N", sort=None, title=None), y=alt.Y("fails:Q", title="FAIL parts"))
        line = alt.Chart(pareto).mark_line(point=True, color="#333").encode(
            x=alt.X("defect:N", sort=None), y=alt.Y("cumulative:Q", axis=alt.Axis(format="%"),
                                                    title="cumulative share"))
        st.altair_chart(alt.layer(bars, line).resolve_scale(y="independent").properties(height=280),
                        width="stretch")
        st.dataframe(pareto[["tool", "defect_class", "fails", "share"]].assign(
            share=pareto["share"].map(ui.fmt_pct)), hide_index=True)

with scores:
    histogram = score_distribution(store, where)
    if histogram.empty:
        st.caption("No part inspected in this range.")
    else:
        st.altair_chart(alt.Chart(histogram).mark_bar(opacity=0.8).encode(
            x=alt.X("bin_low:Q", bin=alt.Bin(step=0.05), title="smoothed defect score"),
            y=alt.Y("sum(count):Q", title="tool verdicts"),
            color=alt.Color("verdict:N", scale=alt.Scale(domain=["PASS", "FAIL"],
                                                         range=["#1f9d3a", "#d62828"])),
        ).properties(height=280), width="stretch")
        st.caption("Parts far from their tool's threshold were clear-cut; a pile-up near it means "
                   "the tool hesitates (more photos of such parts, or a threshold review).")

with recent:
    latest = store.events(where, limit=200)
    st.download_button("Download events (CSV)", data=lambda: events_csv(store, where),
                       file_name=f"inspection-history-{first}-{last}.csv", mime="text/csv",
                       on_click="ignore")
    if latest.empty:
        st.caption("No event in this range.")
    else:
        read = {"Read": latest["reading_text"].fillna(""),  # what a code or text tool read
                "Read as": latest["reading_format"].fillna("")}
        shown = pd.DataFrame({
            "Time": latest["time"].dt.tz_convert(zone).dt.strftime("%Y-%m-%d %H:%M:%S"),
            "Station": latest["station"], "Camera": latest["camera"], "Tool": latest["tool"],
            "Verdict": latest["verdict"], "Defect": latest["defect_class"].fillna(""),
            **(read if latest["reading_text"].notna().any() else {}),
            "Score": latest["score"].round(3), "Threshold": latest["threshold"].round(3),
            "Event": latest["cause"], "Trigger": latest["trigger_id"].fillna(""),
            "Version": latest["version"], "Image": latest["has_image"].map({True: "yes", False: ""}),
        })
        st.caption(f"Latest {len(shown)} event(s), newest first (heartbeats included).")
        st.dataframe(shown, hide_index=True, height=300)
        with_image = latest[latest["has_image"]]
        if not with_image.empty:
            labels = {int(r.id): f"{shown.loc[i, 'Time']} {r.tool} {r.defect_class or 'FAIL'}"
                      for i, r in with_image.iterrows()}
            chosen = st.selectbox("FAIL image", list(labels), format_func=labels.get,
                                  key="history_image")
            jpeg = store.fail_image(chosen)
            if jpeg:
                st.image(jpeg, width=320)
                event = with_image[with_image["id"] == chosen].iloc[0]
                st.button(f"Send to the review queue of {event['tool']}", key="history_review",
                          on_click=send_for_review, args=(event, jpeg),
                          help="An engineer labels it on the Labeling page: a doubted FAIL is "
                               "worth a look, and a label puts it into the tool's photos.")
                ui.show_flash(REVIEW_SENT)
            else:
                st.caption("This image was deleted by the retention rule.")

with audit:
    changes = store.changes(where, limit=200)
    if changes.empty:
        st.caption("No tool change in this range.")
    else:
        st.dataframe(pd.DataFrame({
            "Time": changes["time"].dt.tz_convert(zone).dt.strftime("%Y-%m-%d %H:%M:%S"),
            "Station": changes["station"], "Tool": changes["tool"], "Change": changes["action"],
            "Details": changes["details"].map(lambda d: ", ".join(f"{k}: {v}" for k, v in d.items())),
            "By": changes["actor"],
        }), hide_index=True, height=300)
    # how often operators disagree with each tool (corrections on Live inspection)
    corrected = operator_corrections(store, where)
    if corrected["corrections"].sum():
        st.markdown("**Operator corrections per tool**: verdicts an operator said were wrong on "
                    "Live inspection, against the parts the tool judged")
        st.dataframe(corrected.assign(share=[ui.fmt_pct(None if pd.isna(v) else v)
                                                   for v in corrected["share"]]).rename(columns={
            "tool": "Tool", "parts": "Parts", "corrections": "Corrections",
            "share": "Corrected"}), hide_index=True)
