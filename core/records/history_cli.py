"""``inspector history``: export the inspection history and print its reports from a shell.

    inspector history export --format csv|parquet --out FILE [--since D --until D --tool T]
    inspector history report yield|pareto|scores|fpy [--by hour|shift|day] [--json] [...]

Dates are local: ``2025-03-01`` or ``2025-03-01T14:00``; a date alone as ``--until`` includes
that whole day.
"""

from __future__ import annotations

import argparse
import json
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import InspectorError
from core.records.report_options import DEFAULT_SHIFTS, EXPORT_FORMATS, PERIODS, REPORT_NAMES
from core.security.access import REPORT

if TYPE_CHECKING:
    from core.records.history import EventFilter

# The history and the report engine (pandas, the database) are imported by the commands that
# read them: building the parser stays light for every other command.


def parse_when(text: str, end_of_day: bool = False) -> float:
    """A local date or date-time as epoch seconds (a bare date: its start, or its end)."""
    from core.records.reports import local_zone

    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise InspectorError(f"'{text}' is not a date: write YYYY-MM-DD or YYYY-MM-DDTHH:MM") from exc
    if end_of_day and len(text.strip()) == len(date.min.isoformat()):
        when += timedelta(days=1)
    return (when if when.tzinfo else when.replace(tzinfo=local_zone())).timestamp()


def _filter(args: argparse.Namespace) -> EventFilter:
    from core.records.history import EventFilter

    since = parse_when(args.since) if args.since else None
    until = parse_when(args.until, end_of_day=True) if args.until else None
    if since is not None and until is not None and since >= until:
        raise InspectorError("--since must come before --until")
    return EventFilter(since=since, until=until, tools=tuple(args.tool or ()),
                       stations=tuple(args.station or ()))


def cmd_export(args: argparse.Namespace) -> None:
    from core.records.history import open_history
    from core.records.reports import export_events

    count = export_events(open_history(), Path(args.out), args.format, _filter(args))
    print(f"wrote {count} event(s) to {args.out}")


def cmd_report(args: argparse.Namespace) -> None:
    from core.records.history import open_history
    from core.records.reports import REPORTS, yield_over_time

    store, where = open_history(), _filter(args)
    if args.kind == "yield":
        shifts = [s for s in args.shifts.split(",") if s.strip()]
        frame = yield_over_time(store, where, by=args.by, shifts=shifts)
    else:
        frame = REPORTS[args.kind](store, where)
    if args.json:
        print(json.dumps(json.loads(frame.to_json(orient="records", date_format="iso"))))
    elif frame.empty:
        print("no events in this range")
    else:
        print(frame.to_string(index=False))


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``history export`` and ``history report`` to the ``inspector`` command."""
    history = sub.add_parser("history", help="export the inspection history or print its reports")
    actions = history.add_subparsers(dest="history_command", required=True)

    def filters(p: argparse.ArgumentParser) -> None:
        p.add_argument("--since", help="local date or date-time (YYYY-MM-DD[THH:MM])")
        p.add_argument("--until", help="local date (whole day included) or date-time")
        p.add_argument("--tool", action="append", help="only this tool (repeatable)")
        p.add_argument("--station", action="append", help="only this station (repeatable)")

    p = actions.add_parser("export", help="write the events to a CSV or Parquet file")
    p.add_argument("--format", choices=EXPORT_FORMATS, required=True)
    p.add_argument("--out", required=True)
    filters(p)
    p.set_defaults(run=cmd_export, needs=REPORT)

    p = actions.add_parser("report", help="yield over time, defect Pareto, score histogram or "
                                          "first-pass yield")
    p.add_argument("kind", choices=REPORT_NAMES)
    p.add_argument("--by", choices=PERIODS, default="day", help="period of the yield report")
    p.add_argument("--shifts", default=",".join(DEFAULT_SHIFTS), help="shift starts, HH:MM,...")
    p.add_argument("--json", action="store_true")
    filters(p)
    p.set_defaults(run=cmd_report, needs=REPORT)
