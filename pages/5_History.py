"""History: a placeholder until verdict storage arrives with the history feature."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

if str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd
import streamlit as st

import pages as ui
from core import live

ui.page_setup("History", ":material/history:")
st.info("Stored inspection history (search, export, statistics) arrives with the history "
        "feature. Until then, this page shows the verdicts kept in memory since the station "
        "started: every verdict change in continuous mode and every triggered verdict.")

records = live.recent()
if not records:
    st.caption("No verdict yet in this session of the station.")
else:
    fails = sum(r.verdict == "FAIL" for r in records)
    st.markdown(f"**{len(records)}** verdict(s) in memory: **{len(records) - fails} PASS**, "
                f"**{fails} FAIL**")
    st.dataframe(pd.DataFrame([{
        "Time": datetime.fromtimestamp(r.time).strftime("%Y-%m-%d %H:%M:%S"), "Tool": r.tool,
        "Verdict": r.verdict, "Event": r.cause, "Defect": r.defect_class or "",
        "Score": round(r.score, 3),
        "Threshold": round(r.threshold, 3), "Version": r.version,
    } for r in reversed(records)]), hide_index=True, width="stretch")
