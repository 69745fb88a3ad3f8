"""``inspector review``: the crops the line kept for review, from a shell.

    inspector review list TOOL [--labelled] [--json]
    inspector review label TOOL ID LABEL      (a class of the tool, or 'discard')
    inspector review undo TOOL ID
    inspector review export TOOL --out DIR    (DIR/<label or 'waiting'>/<id>.png + review.json)

A label puts the crop into the tool's photos at once (``core.station.line_learning.ReviewQueue``), where
the next ``inspector train`` finds it; ``undo`` takes it out again. Listing needs the operator's
role (INSPECT: what the line kept); labelling and exporting photos are the engineer's review
(CONFIGURE), as on the Labeling page. Light: no model is loaded.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from core.security.access import CONFIGURE, INSPECT

if TYPE_CHECKING:
    from core.station.line_learning import KeptFrame, ReviewQueue

WAITING = "waiting"  # export's folder of the crops nobody labelled yet


def _queue(name: str) -> ReviewQueue:
    from core.station.line_learning import ReviewQueue
    from core.store.tools import ToolStore

    return ReviewQueue(ToolStore().get(name))


def _line(record: KeptFrame) -> str:
    when = datetime.fromtimestamp(record.time).strftime("%Y-%m-%d %H:%M:%S")
    label = (f"\t{record.label} by {record.labelled_by}" if record.label is not None else "")
    return (f"{record.id}\t{record.reason}\tscore {record.score:.3f} / {record.threshold:.3f}\t"
            f"{record.version}\t{when}{label}")


def cmd_list(args: argparse.Namespace) -> None:
    queue = _queue(args.tool)
    records = queue.labelled() if args.labelled else queue.pending()
    if args.json:
        print(json.dumps([r.to_json() for r in records]))
    elif not records:
        print("nothing labelled" if args.labelled else "nothing waiting for a label")
    else:
        print("\n".join(_line(r) for r in records))


def cmd_label(args: argparse.Namespace) -> None:
    record = _queue(args.tool).label(args.id, args.label)
    where = f": in the photos as {record.dataset_path}" if record.dataset_path else ""
    print(f"{record.id} labelled '{record.label}'{where}")


def cmd_undo(args: argparse.Namespace) -> None:
    record = _queue(args.tool).undo(args.id)
    print(f"{record.id}: " + (f"back to '{record.label}'" if record.label else "waiting again"))


def cmd_export(args: argparse.Namespace) -> None:
    import shutil

    queue, out = _queue(args.tool), Path(args.out)
    records = queue.pending() + queue.labelled()
    for record in records:
        folder = out / (record.label or WAITING)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(queue.folder / f"{record.id}.png", folder / f"{record.id}.png")
    (out / "review.json").write_text(json.dumps([r.to_json() for r in records], indent=1))
    print(f"wrote {len(records)} crop(s) of {args.tool} to {out}")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``review list|label|undo|export`` to the ``inspector`` command."""
    review = sub.add_parser("review", help="the crops the line kept for review: list, label, "
                                           "undo, export")
    actions = review.add_subparsers(dest="review_command", required=True)

    p = actions.add_parser("list", help="the kept crops waiting for a label, hardest first")
    p.add_argument("tool")
    p.add_argument("--labelled", action="store_true", help="the labelled ones instead, newest first")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_list, needs=INSPECT)

    p = actions.add_parser("label", help="label a kept crop: it goes into the tool's photos")
    p.add_argument("tool")
    p.add_argument("id")
    p.add_argument("label", help="a class of the tool, or 'discard'")
    p.set_defaults(run=cmd_label, needs=CONFIGURE)

    p = actions.add_parser("undo", help="take back a kept crop's latest label")
    p.add_argument("tool")
    p.add_argument("id")
    p.set_defaults(run=cmd_undo, needs=CONFIGURE)

    p = actions.add_parser("export", help="copy the kept crops and their records to a folder")
    p.add_argument("tool")
    p.add_argument("--out", required=True)
    p.set_defaults(run=cmd_export, needs=CONFIGURE)
