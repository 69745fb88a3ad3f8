"""``inspector``: every engine operation from a shell, for engineers, scripts and headless stations.

Errors print one line (``error: ...``) and exit with status 2; nothing prints a traceback.

A person at the station's shell is trusted like a vision sensor's local console: commands run
as the admin ``cli:<OS user>``, the name the audit trail records. A station service can run
them with less (``INSPECTOR_ROLE=operator``): a command its role may not run is refused with
the role it needs, before anything is done.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import threading
from pathlib import Path
from collections.abc import Iterator
from typing import TYPE_CHECKING

from core.engine.kinds import KINDS, REQUIRED, Expectation, get_kind
from core.errors import InspectorError
from core.records.history_cli import add_parser as add_history_parser
from core.records.verdicts import FAIL, PASS, verdict_of
from core.security.access import (ADMIN, ADMINISTER, CONFIGURE, INSPECT, PERMISSIONS, AccessDenied, User,
                                  as_user, needed_role, require)
from core.security.users_cli import add_parser as add_users_parser
from core.station.review_cli import add_parser as add_review_parser
from core.store.settings import StationSettings, load_settings, save_settings
from core.store.tools import ROI, ToolStore, TTASettings

if TYPE_CHECKING:
    import numpy as np

    from core.engine.training import Progress

ROLE_ENV = "INSPECTOR_ROLE"


def _classes_in(folder: Path) -> tuple[str, ...]:
    if not folder.is_dir():
        raise InspectorError(f"no folder at {folder}: give DIR with one sub-folder per class")
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if "good" not in names:
        found = f"its sub-folders are {', '.join(names)}" if names else "it has no sub-folder"
        raise InspectorError(f"{folder} has no 'good' sub-folder ({found})")
    return ("good", *[n for n in names if n != "good"])


def _print_progress(progress: Progress) -> None:
    eta = f", about {progress.eta_s:.0f} s left" if progress.eta_s is not None else ""
    print(f"\r{progress.stage}: {progress.done}/{progress.total}{eta}    ", end="",
          file=sys.stderr, flush=True)
    if progress.done == progress.total:
        print(file=sys.stderr)


# The engine (torch, OpenCV) is imported inside the commands that run it, so that listing tools,
# showing settings or printing a report answers at once.

def cmd_train(args: argparse.Namespace) -> None:
    from core.engine.training import TrainingOptions, train_tool
    from core.store.datasets import load_folder

    store = ToolStore()
    folder = Path(args.data)
    classes = _classes_in(folder) if get_kind(args.kind).photos == REQUIRED else ("good",)  # else DIR/good
    settings = {"kind": args.kind, "classes": classes}
    if args.profile:
        settings["profile"] = args.profile
    tool = store.get_or_create(args.tool, **settings)
    tool.update(**settings, **({"allow_flips": True} if args.allow_flips else {}))
    data = load_folder(folder, classes)
    if data.skipped:
        print(f"warning: {data.skipped_report()}", file=sys.stderr)
    meta = train_tool(tool, data, TrainingOptions(seed=args.seed, activate=not args.no_activate),
                      on_progress=_print_progress)
    v = meta.validation
    figures = (f"validation balanced accuracy {v.balanced_accuracy:.3f}, ROC AUC {v.auroc:.3f}"
               if v.balanced_accuracy is not None else
               f"{v.confusion.false_fail} of {v.n} good photos above the threshold held out")
    photos = ", ".join(f"{n} {name}" for name, n in meta.images.items())
    print(f"trained {tool.name} {meta.id} on {photos} photos in {meta.training_seconds} s: "
          f"{figures}, suggested threshold {meta.suggested_threshold:.3f}"
          + ("" if args.no_activate else " (active)"))


def cmd_evaluate(args: argparse.Namespace) -> None:
    import numpy as np

    from core.engine.inference import TrainedModel
    from core.engine.metrics import pass_fail_metrics
    from core.store.datasets import load_folder

    tool = ToolStore().get(args.tool)
    model = TrainedModel(tool, args.version)
    folder = Path(args.data)
    names = _classes_in(folder)
    data = load_folder(folder, names)
    if not data.images:
        raise InspectorError(f"no readable images under {folder}")
    scores = model.defect_scores(data.images)
    is_defect = np.array([names[y] != "good" for y in data.labels])
    result = pass_fail_metrics(is_defect, scores, tool.config.threshold)
    result.update(tool=tool.name, version=model.version, skipped=[str(p) for p in data.skipped])
    if args.json:
        print(json.dumps(result))
    else:
        confusion = result["confusion"]
        good, defect = (sum(row) for row in confusion["matrix"])  # rows: true good, true defect
        figures = ("no balanced accuracy or ROC AUC (they need good and defect photos)"
                   if result["balanced_accuracy"] is None else
                   f"balanced accuracy {result['balanced_accuracy']:.3f}, ROC AUC {result['auroc']:.3f}")
        print(f"{tool.name} {model.version} on {result['n']} images at threshold "
              f"{result['threshold']:.3f}: {figures}; {confusion['false_fail']} of {good} good "
              f"photo(s) failed, {confusion['missed_defect']} of {defect} defect photo(s) passed")


def cmd_predict(args: argparse.Namespace) -> None:
    import cv2

    from core.engine.explanation import blend_heatmap
    from core.engine.inference import TrainedModel

    tool = ToolStore().get(args.tool)
    model = TrainedModel(tool)
    if not model.kind.neural:
        raise InspectorError(f"'{tool.name}' is a {model.kind.name} tool: read images with "
                             f"'inspector read --tool {tool.name} IMAGE...'")
    rows = []
    for name, roi in _rois(args, tool.config.roi):
        explained = model.explain([roi])[0]
        verdict = verdict_of(explained.score, tool.config.threshold)
        row = {"image": name, "verdict": verdict, "score": explained.score,
               "class": explained.defect_class if verdict == FAIL else "good" if verdict == PASS else None,
               "threshold": tool.config.threshold}
        if explained.probabilities is not None:
            row["probabilities"] = dict(zip(model.head.classes, map(float, explained.probabilities)))
        if args.heatmap:
            out = Path(args.heatmap) / f"{Path(name).stem}-heatmap.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out), blend_heatmap(roi, explained.heat))
            row["heatmap"] = str(out)
        rows.append(row)
    if args.json:
        print(json.dumps(rows if len(rows) > 1 else rows[0]))
    else:
        for row in rows:
            print(f"{row['image']}: {row['verdict']} ({row['class']}, score {row['score']:.3f})")


def cmd_read(args: argparse.Namespace) -> None:
    from core.engine.inference import TrainedModel

    tool = ToolStore().get(args.tool)
    model = TrainedModel(tool)
    if model.kind.neural:
        raise InspectorError(f"'{tool.name}' is a {model.kind.name} tool, it reads nothing: score "
                             f"images with 'inspector predict --tool {tool.name} IMAGE...'")
    rows = []
    for name, roi in _rois(args, tool.config.roi):
        judged = model.judge.read(roi, args.expected)
        reading = judged.reading
        rows.append({"image": name, "verdict": verdict_of(judged.score, tool.config.threshold),
                     "text": reading.text if reading else None,
                     "format": reading.format if reading else None,
                     "confidence": reading.confidence if reading else None,
                     "grade": reading.grade if reading else None, "why": judged.defect})
    if args.json:
        print(json.dumps(rows if len(rows) > 1 else rows[0]))
        return
    for row in rows:
        read = f"{row['format']} '{row['text']}'" if row["text"] is not None else "nothing read"
        print(f"{row['image']}: {row['verdict']} ({read}{'; ' + row['why'] if row['why'] else ''})")


def _rois(args: argparse.Namespace, roi: ROI) -> Iterator[tuple[str, np.ndarray]]:
    """Each image the command names with the part it judges: the tool's ROI of a full camera
    frame (``--full-frame``), else the image itself (already a ROI crop)."""
    from core.engine.preprocessing import crop_roi
    from core.store.datasets import read_image

    for name in args.images:
        image = read_image(Path(name))
        if image is None:
            raise InspectorError(f"'{name}' is not a readable image")
        yield name, crop_roi(image, roi) if args.full_frame else image


def _expectation(text: str) -> dict[str, str]:
    """``exact:TEXT``, ``pattern:REGEX`` or ``trigger`` as a tool's ``expect``."""
    mode, _, value = text.partition(":")
    return Expectation.from_json({"mode": mode, "value": value}).to_json()


def cmd_tools(args: argparse.Namespace) -> None:
    tools, broken = ToolStore().scan()
    for name, problem in broken.items():
        print(f"{name}\tBROKEN: {problem}", file=sys.stderr)
    for tool in tools:
        c = tool.config
        setup = (f"classes={','.join(c.classes)}" if c.expect is None
                 else f"expects {Expectation.from_json(c.expect).shown()}")
        print(f"{c.name}\t{c.kind}\t{c.profile if get_kind(c.kind).neural else '-'}\t"
              f"version={c.active_version or '-'}\tthreshold={c.threshold:.3f}\t{setup}")


def cmd_create(args: argparse.Namespace) -> None:
    settings: dict = {"kind": args.kind, "profile": args.profile}
    if args.classes:
        settings["classes"] = tuple(args.classes.split(","))
    if args.expect:
        settings["expect"] = _expectation(args.expect)
    kind = get_kind(args.kind)
    tool = ToolStore().create(args.tool, **settings)
    print(f"created tool {tool.name} in {tool.folder}")
    if not kind.learns:
        from core.engine.training import train_tool

        meta = train_tool(tool)
        print(f"saved its setup as version {meta.id} (active): {meta.validation.method}")


def cmd_set(args: argparse.Namespace) -> None:
    from core.station.live import camera_name

    tool = ToolStore().get(args.tool)
    changes: dict = {}
    if args.threshold is not None:
        changes["threshold"] = args.threshold
    if args.smoothing is not None:
        changes["smoothing"] = args.smoothing
    if args.roi:
        changes["roi"] = ROI(*[float(v) for v in args.roi.split(",")])
    if args.tta is not None:
        changes["tta"] = TTASettings(args.tta == "on", tool.config.tta.variants)
    if args.profile:
        changes["profile"] = args.profile
    if args.camera:
        changes["camera"] = camera_name(args.camera)
    if args.expect:
        changes["expect"] = _expectation(args.expect)
    tool.update(**changes)
    if args.expect:  # a reading tool's setup is its version: the new one is made active at once
        from core.engine.training import train_tool

        train_tool(tool)
    print(json.dumps(tool.config.to_json()))


def cmd_versions(args: argparse.Namespace) -> None:
    tool = ToolStore().get(args.tool)
    for meta in tool.versions():
        v = meta.validation
        print(f"{'*' if meta.id == tool.config.active_version else ' '} {meta.id}\t{meta.profile or '-'}\t"
              f"images={sum(meta.images.values())}\tbalanced_accuracy="
              + ("-" if v.balanced_accuracy is None else f"{v.balanced_accuracy:.3f}"))


def cmd_compare(args: argparse.Namespace) -> None:
    from core.engine.comparison import compare_with_active

    c = compare_with_active(ToolStore().get(args.tool), args.version)
    print(f"{c.tool}: {c.candidate.version} against the active {c.active.version} on the same "
          f"{len(c.photos)} photos the active one was not trained on ({c.good} good, {c.defects} "
          f"defect, {c.corrections} operator corrections)")
    for role, f in (("new", c.candidate), ("active", c.active)):
        accuracy = "-" if f.balanced_accuracy is None else f"{f.balanced_accuracy:.3f}"
        print(f"{role}\t{f.version}\tthreshold={f.threshold:.3f}\tbalanced_accuracy={accuracy}\t"
              f"misses={f.misses}/{c.defects}\tfalse_rejects={f.false_rejects}/{c.good}\t{f.scored_as}")


def cmd_activate(args: argparse.Namespace) -> None:
    tool = ToolStore().get(args.tool)
    tool.activate(args.version)
    print(f"{tool.name}: version {args.version} is active, threshold {tool.config.threshold:.3f}")


def cmd_export(args: argparse.Namespace) -> None:
    from core.engine.exchange import export_onnx, export_tool

    tool = ToolStore().get(args.tool)
    if args.onnx:
        report = export_onnx(tool, Path(args.out))
        print(f"wrote {report['path']} (onnxruntime agrees within {report['max_score_difference']:.1e})")
    else:
        print(f"wrote {export_tool(tool, Path(args.out), include_images=args.with_images)}")


def cmd_import(args: argparse.Namespace) -> None:
    from core.engine.exchange import import_tool

    tool = import_tool(Path(args.file), name=args.name, replace_existing=args.replace)
    print(f"imported tool {tool.name} (version {tool.config.active_version or 'none'})")


def cmd_profiles(args: argparse.Namespace) -> None:
    from core.engine.backbones import available_profiles

    for p in available_profiles().values():
        print(f"{p.name}\t{p.architecture}\t{p.input_size}px\t{p.description}")


def cmd_cert(args: argparse.Namespace) -> None:
    from core.security.https import make_self_signed
    from core.store.workspace import workspace_root

    cert, key = make_self_signed(Path(args.out) if args.out else workspace_root() / "pki" / "https",
                                 args.host or None)
    print(f"wrote {cert} and {key} (owner-only). Serve the LAN over HTTPS with:\n"
          f"  streamlit run Home.py --server.address 0.0.0.0 --server.sslCertFile {cert} "
          f"--server.sslKeyFile {key}")


def cmd_station_show(args: argparse.Namespace) -> None:
    print(json.dumps(load_settings().to_json(), indent=2))


def cmd_station_set(args: argparse.Namespace) -> None:
    data = load_settings().to_json()
    for assignment in args.settings:
        key, sep, text = assignment.partition("=")
        if not sep:
            raise InspectorError(f"'{assignment}' is not KEY=VALUE (e.g. mqtt.enabled=true)")
        *sections, field = key.strip().split(".")
        target = data
        for section in sections:
            if not isinstance(target.get(section), dict):
                raise InspectorError(f"'{key}': there is no settings section '{section}'")
            target = target[section]
        try:
            target[field] = json.loads(text)
        except json.JSONDecodeError:
            target[field] = text  # a plain word: a string setting
    settings = StationSettings.from_json(data)
    save_settings(settings)
    print(json.dumps(settings.to_json(), indent=2))


def cmd_station_run(args: argparse.Namespace) -> None:
    from core.station.headless import parse_sources, run_station
    from core.station.line import close_lines
    from core.station.live_station import close_live_stations, live_station

    sources = parse_sources(args.camera)
    stop = threading.Event()
    if args.duration:
        timer = threading.Timer(args.duration, stop.set)
        timer.daemon = True
        timer.start()
    try:
        frames = run_station(live_station(), sources, triggered=args.triggered, stop=stop)
    finally:
        close_live_stations()
        close_lines()
    print(json.dumps({"frames": frames}))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inspector", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a tool from DIR/<class>/ images and activate it")
    p.add_argument("--tool", required=True)
    p.add_argument("--data", required=True, help="folder with one sub-folder per class, incl. good "
                   "(an anomaly tool uses only DIR/good)")
    p.add_argument("--profile")
    p.add_argument("--kind", default="classifier",
                   choices=[name for name, kind in KINDS.items() if kind.learns])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--allow-flips", action="store_true", help="parts look the same mirrored")
    p.add_argument("--no-activate", action="store_true", help="keep the current version live")
    p.set_defaults(run=cmd_train, needs=CONFIGURE)

    p = sub.add_parser("evaluate", help="pass/fail figures of a tool on DIR/<class>/ images")
    p.add_argument("--tool", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--version")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_evaluate)

    p = sub.add_parser("predict", help="classify image files")
    p.add_argument("--tool", required=True)
    p.add_argument("images", nargs="+")
    p.add_argument("--heatmap", metavar="OUT_DIR", help="write Grad-CAM / anomaly map overlays there")
    p.add_argument("--full-frame", action="store_true", help="crop the tool's ROI first")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_predict)

    p = sub.add_parser("read", help="read the code or text of image files with a reading tool")
    p.add_argument("--tool", required=True)
    p.add_argument("images", nargs="+")
    p.add_argument("--expected", help="the value a trigger would send (a tool that expects it)")
    p.add_argument("--full-frame", action="store_true", help="crop the tool's ROI first")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_read)

    p = sub.add_parser("tools", help="list the station's tools")
    p.set_defaults(run=cmd_tools)

    p = sub.add_parser("create", help="create a tool: an empty one that learns from photos, or a "
                       "reading tool set up with what it expects")
    p.add_argument("--tool", required=True)
    p.add_argument("--kind", default="classifier", choices=list(KINDS),
                   help="; ".join(f"{name}: {kind.title}" for name, kind in KINDS.items()))
    p.add_argument("--profile", default="fast")
    p.add_argument("--classes", help="for a kind that learns (default good,defect)")
    p.add_argument("--expect", help="for a code or text tool: exact:TEXT, pattern:REGEX or trigger")
    p.set_defaults(run=cmd_create, needs=CONFIGURE)

    p = sub.add_parser("set", help="change a tool's live settings")
    p.add_argument("--tool", required=True)
    p.add_argument("--threshold", type=float)
    p.add_argument("--smoothing", type=int)
    p.add_argument("--roi", help="x,y,w,h in 0..1 of the frame")
    p.add_argument("--tta", choices=["on", "off"])
    p.add_argument("--profile")
    p.add_argument("--camera", help="the camera the tool watches (a name such as 0, 1, top)")
    p.add_argument("--expect", help="a code or text tool's new setup, saved as its active version: "
                   "exact:TEXT, pattern:REGEX or trigger")
    p.set_defaults(run=cmd_set, needs=CONFIGURE)

    p = sub.add_parser("versions", help="list a tool's model versions")
    p.add_argument("--tool", required=True)
    p.set_defaults(run=cmd_versions)

    p = sub.add_parser("compare", help="a new version beside the active one on the photos the "
                       "active one was not trained on, before it serves")
    p.add_argument("--tool", required=True)
    p.add_argument("--version", required=True)
    p.set_defaults(run=cmd_compare)

    p = sub.add_parser("activate", help="make a model version active (rollback); a running station "
                       "takes the tool off its line until someone adds it again")
    p.add_argument("--tool", required=True)
    p.add_argument("--version", required=True)
    p.set_defaults(run=cmd_activate, needs=CONFIGURE)

    p = sub.add_parser("export", help="export a tool to one file (or its model to ONNX)")
    p.add_argument("--tool", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--with-images", action="store_true")
    p.add_argument("--onnx", action="store_true", help="write the active model as ONNX")
    p.set_defaults(run=cmd_export, needs=CONFIGURE)

    p = sub.add_parser("import", help="install a tool file made by 'inspector export'")
    p.add_argument("file")
    p.add_argument("--name", help="install under another name")
    p.add_argument("--replace", action="store_true", help="replace a tool of the same name")
    p.set_defaults(run=cmd_import, needs=CONFIGURE)

    p = sub.add_parser("cert", help="make a self-signed HTTPS certificate for serving the LAN")
    p.add_argument("--host", action="append", help="a name or address the station is reached by "
                   "(repeatable; default: this computer's name, localhost, 127.0.0.1)")
    p.add_argument("--out", help="folder (default: <workspace>/pki/https)")
    p.set_defaults(run=cmd_cert, needs=ADMINISTER)

    p = sub.add_parser("profiles", help="list the network profiles available offline")
    p.set_defaults(run=cmd_profiles)

    station = sub.add_parser("station", help="the station: its settings, and running it headless")
    station_sub = station.add_subparsers(dest="station_command", required=True)
    p = station_sub.add_parser("show", help="print the station settings (station.json)")
    p.set_defaults(run=cmd_station_show)
    p = station_sub.add_parser("set", help="change station settings, e.g. mqtt.enabled=true")
    p.add_argument("settings", nargs="+", metavar="KEY=VALUE")
    p.set_defaults(run=cmd_station_set, needs=ADMINISTER)
    p = station_sub.add_parser("run", help="inspect cameras without a browser: history, MQTT, OPC UA")
    p.add_argument("--camera", action="append", required=True, metavar="[NAME=]SOURCE",
                   help="a device index, video file or stream URL; repeat for several cameras")
    p.add_argument("--triggered", action="store_true",
                   help="switch these cameras to one verdict per trigger from the line (otherwise "
                        "each camera keeps the mode the station has for it)")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.set_defaults(run=cmd_station_run, needs=INSPECT)
    add_history_parser(sub)
    add_users_parser(sub)
    add_review_parser(sub)
    return parser


def shell_user() -> User:
    """Who runs a command: ``cli:<OS user>``, admin unless ``INSPECTOR_ROLE`` says less."""
    return User(f"cli:{getpass.getuser()}", os.environ.get(ROLE_ENV) or ADMIN)


def record_changes() -> None:
    """Record the command's changes in the station's history (written before the process ends),
    as the app records its own."""
    from core.records.history import open_history

    settings = load_settings()
    try:
        open_history(settings).listen_to_tool_changes(settings.name)
    except InspectorError as exc:  # e.g. fixing the history URL itself: the shell is trusted
        print(f"warning: not recorded in the history: {exc}", file=sys.stderr)


def for_the_shell(exc: InspectorError) -> str:
    """An error as the shell should read it: a role refusal names the role and ``INSPECTOR_ROLE``
    (the shell does not log in)."""
    if not isinstance(exc, AccessDenied) or exc.permission is None:
        return str(exc)
    role = needed_role(exc.permission)
    return (f"{PERMISSIONS[exc.permission][0]} needs the {role} role; this shell runs as "
            f"{os.environ.get(ROLE_ENV)} ({ROLE_ENV}): unset {ROLE_ENV} or set it to {role}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with as_user(shell_user()):
            if getattr(args, "needs", None):
                require(args.needs)
                record_changes()
            args.run(args)
    except InspectorError as exc:
        print(f"error: {for_the_shell(exc)}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; nothing was changed", file=sys.stderr)
        return 130
    return 0
