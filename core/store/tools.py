"""Tools: named inspections, each with its classes, ROI, network profile, settings and models.

A tool lives in ``<workspace>/tools/<name>/``: ``tool.json`` (readable configuration),
``images/<class>/`` (its dataset) and ``versions/<id>/`` (trained models, weights in safetensors).
Loading a tool parses JSON and safetensors only: nothing is ever unpickled.

Every change made to a tool (created, a setting changed, trained, activated, imported, renamed,
duplicated, deleted) is announced as a ``ToolChange`` to the listeners registered with
``add_change_listener``: the history store records them so a manager can audit why the line
behaved as it did. ``acting_as`` names who makes the changes in a block of code; by default it
is the acting user (``core.security.access``), whose role every change needs (``CONFIGURE``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from core.engine.kinds import get_kind, kind_names
from core.errors import InspectorError, quoted
from core.records.validation import Validation, validation_problem
from core.security.access import CONFIGURE, acting_user, require
from core.store.workspace import atomic_write_json, fsync_dir, workspace_root

TTA_VARIANTS = ("hflip", "vflip", "brighter", "darker")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")
_CONFIG_FILE = "tool.json"
SCHEMA_VERSION = 1
MAX_JSON_BYTES = 16 * 1024 * 1024  # tool.json, meta.json, a tool file's manifest
_LEFTOVER = re.compile(r"^\.(import|trash|deleted)-(.+)-(\d+)-[0-9a-f]{8}$")  # .<kind>-<tool>-<pid>-<id>
STALE_SAVE_S = 15 * 60  # a temporary file or version folder this old is left by an interrupted save


# ------------------------------------------------------------------ audit of changes

@dataclass(frozen=True)
class ToolChange:
    """One change made to a tool: what, to which tool, by whom, when."""

    tool: str
    action: str  # created, threshold, roi, <other setting>, trained, activated, imported, ...
    details: dict[str, Any]
    actor: str
    time: float


ChangeListener = Callable[[ToolChange], None]
_listeners: list[ChangeListener] = []
_actor: ContextVar[str | None] = ContextVar("tool_change_actor", default=None)


def add_change_listener(listener: ChangeListener) -> Callable[[], None]:
    """Call ``listener`` on every tool change from now on; returns a function that stops it."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener) if listener in _listeners else None


@contextlib.contextmanager
def acting_as(actor: str) -> Iterator[None]:
    """Attribute the tool changes made inside the block to ``actor`` (the station names who asked
    for a change it makes later, in its own thread); it does not change who may make them."""
    token = _actor.set(actor)
    try:
        yield
    finally:
        _actor.reset(token)


def current_actor() -> str:
    """Who the changes made here are attributed to: ``acting_as``, else the acting user."""
    named = _actor.get()
    if named:
        return named
    user = acting_user()
    return user.name if user else "nobody"


STATION = "(station)"  # the audit trail's subject for a change of the whole station


def announce(tool: str, action: str, **details: Any) -> None:
    """Tell the listeners about a change, made by ``current_actor()``."""
    change = ToolChange(tool, action, details, current_actor(), time.time())
    for listener in list(_listeners):
        listener(change)


@dataclass(frozen=True)
class ROI:
    """A rectangle in normalised frame coordinates (0..1), so it survives a resolution change."""

    x: float = 0.0
    y: float = 0.0
    w: float = 1.0
    h: float = 1.0

    def __post_init__(self) -> None:
        if not (0 <= self.x < 1 and 0 <= self.y < 1 and 0 < self.w <= 1 and 0 < self.h <= 1
                and self.x + self.w <= 1.0001 and self.y + self.h <= 1.0001):
            raise InspectorError(f"ROI {self} is outside the frame: x, y, w, h must lie in 0..1")

    def to_pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) in pixels, at least one pixel wide."""
        x0, y0 = int(round(self.x * width)), int(round(self.y * height))
        x1 = max(x0 + 1, min(width, int(round((self.x + self.w) * width))))
        y1 = max(y0 + 1, min(height, int(round((self.y + self.h) * height))))
        return x0, y0, x1, y1

    @classmethod
    def from_pixels(cls, x0: float, y0: float, x1: float, y1: float, width: int, height: int) -> ROI:
        x0, x1 = sorted((max(0.0, x0), min(float(width), x1)))
        y0, y1 = sorted((max(0.0, y0), min(float(height), y1)))
        return cls(x0 / width, y0 / height, (x1 - x0) / width, (y1 - y0) / height)


@dataclass(frozen=True)
class TTASettings:
    """Test-time augmentation: classify the ROI plus these variants in one batch, average."""

    enabled: bool = False
    variants: tuple[str, ...] = ("hflip", "brighter", "darker")

    def __post_init__(self) -> None:
        unknown = set(self.variants) - set(TTA_VARIANTS)
        if unknown:
            raise InspectorError(f"unknown TTA variant(s) {quoted(sorted(unknown))}; use {TTA_VARIANTS}")


@dataclass(frozen=True)
class ToolConfig:
    """Everything that defines a tool except its images and weights."""

    name: str
    kind: str = "classifier"
    classes: tuple[str, ...] = ("good", "defect")
    roi: ROI = field(default_factory=ROI)
    profile: str = "fast"
    threshold: float = 0.5
    smoothing: int = 5
    tta: TTASettings = field(default_factory=TTASettings)
    allow_flips: bool = False
    camera: str = "0"
    enabled: bool = True
    active_version: str | None = None
    expect: dict[str, str] | None = None  # what a reading kind must read (see core.engine.kinds.Expectation)
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise InspectorError(f"tool name {quoted(self.name)} is not allowed: use 1-64 letters, "
                                 "digits, spaces, '_', '-' or '.', starting with a letter or digit")
        get_kind(self.kind).check_setup(self.expect)
        if "good" not in self.classes or len(set(self.classes)) != len(self.classes):
            raise InspectorError("a tool's classes must be distinct and include 'good'")
        for c in self.classes:
            if not _NAME.match(c):
                raise InspectorError(f"class name {quoted(c)} is not allowed")
        if not 0.0 <= self.threshold <= 1.0:
            raise InspectorError(f"threshold {self.threshold} must lie between 0 and 1")
        if not 1 <= self.smoothing <= 100:
            raise InspectorError(f"smoothing window {self.smoothing} must be 1..100 frames")

    @property
    def defect_classes(self) -> tuple[str, ...]:
        return tuple(c for c in self.classes if c != "good")

    def to_json(self) -> dict[str, Any]:
        """The configuration as tool.json holds it; a tool that expects no value has no
        ``expect`` (so a station from before reading kinds still imports it)."""
        data = asdict(self)
        if data["expect"] is None:
            del data["expect"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ToolConfig:
        """Parse a config, refusing unknown fields and wrong types with a clear message."""
        if not isinstance(data, dict):
            raise InspectorError("tool configuration must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InspectorError(f"tool configuration has unknown field(s): {quoted(sorted(unknown))}")
        _check_types(data)
        try:
            values = dict(data)
            values["classes"] = tuple(values.get("classes", ("good", "defect")))
            values["roi"] = ROI(**values.get("roi", {}))
            tta = dict(values.get("tta", {}))
            tta["variants"] = tuple(tta.get("variants", TTASettings.variants))
            values["tta"] = TTASettings(**tta)
            config = cls(**values)
        except (TypeError, ValueError) as exc:
            raise InspectorError(f"tool configuration is invalid: {quoted(str(exc))}") from exc
        if config.schema > SCHEMA_VERSION:
            raise InspectorError(f"tool uses schema {config.schema}; this station knows up to "
                                 f"{SCHEMA_VERSION}: update Shopfloor Inspector")
        return config


def parse_json(data: bytes) -> Any:
    """JSON from bytes, or ``InspectorError`` saying why not (bad syntax, encoding, nesting too
    deep to parse, a number too long)."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError included
        reason = "nested too deeply" if isinstance(exc, RecursionError) else quoted(str(exc))
        raise InspectorError(f"not valid JSON ({reason})") from None


def read_json(path: Path, limit: int = MAX_JSON_BYTES) -> Any:
    """A JSON file read with a size limit, or ``InspectorError`` saying what is wrong with it (the
    caller names the file and what to do)."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise InspectorError(f"unreadable: {exc.strerror}") from None
    if len(data) > limit:
        raise InspectorError(f"larger than {limit // 2**20} MB")
    return parse_json(data)


def version_meta_problem(meta: Any) -> str | None:
    """What is wrong with a version's meta.json in the fields the station reads, if anything
    (each checked when present)."""
    if not isinstance(meta, dict):
        return "not a JSON object"
    for key in ("id", "profile", "created"):
        if not isinstance(meta.get(key, ""), str) and not (key == "profile" and meta[key] is None):
            return f"'{key}' is not a text"
    if meta.get("kind", "classifier") not in kind_names():
        return f"unknown kind {quoted(meta['kind'])}"
    shape = meta.get("input")
    if shape is not None and not (isinstance(shape, dict) and all(
            type(shape.get(side)) is int and 32 <= shape[side] <= 4096 for side in ("height", "width"))):
        return "'input' is not a height and width of 32..4096 pixels"
    threshold = meta.get("suggested_threshold", 0.5)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        return "'suggested_threshold' is not a number in 0..1"
    for key, types in (("validation", dict), ("images", dict), ("held_out_by_photo", dict),
                       ("classes", list)):
        if not isinstance(meta.get(key, types()), types):
            return f"'{key}' is not a JSON {'object' if types is dict else 'list'}"
    return validation_problem(meta.get("validation", {}))


@dataclass(frozen=True)
class VersionMeta:
    """A model version's meta.json: what made it and what its validation measured. The fields
    every kind has are typed; a kind's own (its input shape, settings, expectation...) are in
    ``details`` as the kind wrote them."""

    id: str
    kind: str = "classifier"
    profile: str | None = None  # the network profile of a neural kind; None for a reading kind
    classes: tuple[str, ...] = ()
    created: str = ""  # ISO 8601, UTC
    suggested_threshold: float = 0.5
    validation: Validation = field(default_factory=Validation)
    images: dict[str, int] = field(default_factory=dict)  # photos per class it was trained on
    misclassified: tuple[dict[str, Any], ...] = ()  # held-out photos on the wrong side: path, score
    held_out_by_photo: dict[str, float] = field(default_factory=dict)  # every photo's held-out
    # score by core.store.datasets.photo_key: what core.engine.comparison compares versions on
    skipped: tuple[str, ...] = ()  # unreadable photos left out
    training_seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VersionMeta:
        """A metadata object already checked by ``version_meta_problem``."""
        typed = {f.name for f in fields(cls)} - {"details"}
        values = {key: value for key, value in data.items() if key in typed}
        for key in ("classes", "misclassified", "skipped"):
            if key in values:
                values[key] = tuple(values[key])
        if "validation" in values:
            values["validation"] = Validation.from_json(values["validation"])
        return cls(**values, details={k: v for k, v in data.items() if k not in typed})

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "details"}
        for key in ("classes", "misclassified", "skipped"):
            data[key] = list(data[key])
        data["validation"] = self.validation.to_json()
        return {**self.details, **data}


def read_version_meta(folder: Path) -> VersionMeta:
    """A model version's meta.json, refused unless the fields the station reads are sound."""
    path = folder / "meta.json"
    try:
        meta = read_json(path)
        problem = version_meta_problem(meta)
    except InspectorError as exc:
        problem = str(exc)
    if problem:
        raise InspectorError(f"{path} is damaged ({problem}): activate another version or retrain")
    return VersionMeta.from_json({"id": folder.name, **meta})


_NUMBER = (int, float)
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,), "kind": (str,), "classes": (list, tuple), "roi": (dict,), "profile": (str,),
    "threshold": _NUMBER, "smoothing": (int,), "tta": (dict,), "allow_flips": (bool,),
    "camera": (str,), "enabled": (bool,), "active_version": (str, type(None)),
    "expect": (dict, type(None)), "schema": (int,)}
_PART_TYPES: dict[str, dict[str, tuple[type, ...]]] = {
    "roi": {"x": _NUMBER, "y": _NUMBER, "w": _NUMBER, "h": _NUMBER},
    "tta": {"enabled": (bool,), "variants": (list, tuple)}}


def _check_types(data: dict[str, Any]) -> None:
    """Refuse a configuration field of the wrong JSON type before any of it is used (a file may
    hold anything: a number where a name goes, a list where a number goes)."""
    def check(where: str, value: Any, types: tuple[type, ...]) -> None:
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            wanted = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise InspectorError(f"tool configuration field '{where}' must be {wanted}, not "
                                 f"{type(value).__name__}: fix the tool file or export it again")

    for key, value in data.items():
        check(key, value, _FIELD_TYPES[key])
        for part, types in _PART_TYPES.get(key, {}).items():
            if part in value:
                check(f"{key}.{part}", value[part], types)
    for key, items in (("classes", data.get("classes", ())),
                       ("tta.variants", data.get("tta", {}).get("variants", ()))):
        for item in items:
            check(key, item, (str,))


class Tool:
    """A tool on disk: its configuration, dataset folder and model versions."""

    def __init__(self, folder: Path, config: ToolConfig):
        self.folder = folder
        self.config = config

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def images_dir(self) -> Path:
        return self.folder / "images"

    @property
    def versions_dir(self) -> Path:
        return self.folder / "versions"

    def save(self) -> None:
        atomic_write_json(self.folder / _CONFIG_FILE, self.config.to_json())

    def update(self, **changes: Any) -> ToolConfig:
        """Change settings (threshold, ROI, smoothing...), persist them atomically, announce each
        setting that really changed."""
        require(CONFIGURE)
        before = self.config.to_json()
        self.config = replace(self.config, **changes)
        self.save()
        after = self.config.to_json()
        for key in changes:
            if before.get(key) != after.get(key):
                announce(self.name, key, old=before.get(key), new=after.get(key))
        return self.config

    def versions(self) -> list[VersionMeta]:
        """Every complete model version, oldest first."""
        found = []
        if self.versions_dir.is_dir():
            for folder in sorted(self.versions_dir.iterdir()):
                if folder.name.startswith(".") or not (folder / "meta.json").is_file():
                    continue
                try:
                    found.append(read_version_meta(folder))
                except InspectorError:
                    continue  # damaged: it cannot be activated, and the others still list
        return found

    def version_dir(self, version: str | None = None) -> Path:
        version = version or self.config.active_version
        if not version:
            raise InspectorError(f"tool '{self.name}' has no trained model yet: train it first")
        folder = self.versions_dir / version
        if not (folder / "meta.json").is_file():
            raise InspectorError(f"tool '{self.name}' has no model version '{version}'")
        return folder

    def version_meta(self, version: str | None = None) -> VersionMeta:
        return read_version_meta(self.version_dir(version))

    def suggested_threshold(self, version: str) -> float:
        """The threshold a version suggests: what a trial runs it at and an activation sets."""
        return float(self.version_meta(version).suggested_threshold)

    def threshold_of(self, version: str) -> float:
        """The threshold a version judges at: the tool's own for its active version; for any
        other, its suggested one."""
        if version == self.config.active_version:
            return self.config.threshold
        return self.suggested_threshold(version)

    def activate(self, version: str) -> None:
        """Make a version live with its suggested threshold (a rollback activates an older one)."""
        require(CONFIGURE)
        previous = self.config.active_version
        self.config = replace(self.config, active_version=version,
                              threshold=self.suggested_threshold(version))
        self.save()
        announce(self.name, "activated", version=version, previous=previous,
                 threshold=self.config.threshold)


def _running(pid: int) -> bool:
    """Whether a process with this id is running (its staging folders are still in use)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ToolStore:
    """The workspace's tools: create, list, open, rename, duplicate, delete."""

    def __init__(self, root: Path | None = None):
        self.root = (root or workspace_root()) / "tools"
        self._recover()

    def _recover(self) -> None:
        """Finish what interrupted operations left (a kill, a power cut): delete staging folders,
        put back a replaced tool whose successor never landed (else delete it), delete temporary
        files and version folders of saves older than ``STALE_SAVE_S``. Operations of a running
        process are left alone, and nothing here stops the store from opening."""
        if not self.root.is_dir():
            return
        for entry in self.root.iterdir():
            match = _LEFTOVER.match(entry.name)
            if match is None or _running(int(match[3])):
                continue
            target = self.root / match[2]
            try:
                if match[1] == "trash" and not target.exists():
                    entry.rename(target)
                    fsync_dir(self.root)
                elif match[1] in ("import", "deleted") or (target / _CONFIG_FILE).is_file():
                    shutil.rmtree(entry, ignore_errors=True)
            except OSError:
                continue  # another process recovers it at the same moment, or it stays for later
        tools = [self.root / name for name in self.names()]
        stale = time.time() - STALE_SAVE_S
        for folder in [self.root, *tools, *(t / "versions" for t in tools if (t / "versions").is_dir())]:
            for entry in folder.iterdir():
                with contextlib.suppress(OSError):
                    if not entry.name.startswith(".") or entry.stat().st_mtime >= stale:
                        continue
                    if entry.name.endswith(".tmp") and entry.is_file():
                        entry.unlink()
                    elif entry.name.startswith(".staging-") and entry.is_dir():
                        shutil.rmtree(entry)

    def staging(self, name: str) -> Path:
        """A new, unique folder to assemble tool ``name`` in before ``install`` swaps it in."""
        self._folder(name)
        self.root.mkdir(parents=True, exist_ok=True)
        folder = self.root / f".import-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        return folder

    def install(self, staging: Path, name: str) -> None:
        """Swap a complete tool assembled in ``staging`` in as ``name``, replacing the tool there.

        The old tool is renamed aside first, so at every instant one whole tool is under the name
        or aside (where ``_recover`` puts it back after a kill); a failed swap is rolled back.
        """
        target = self._folder(name)
        trash = self.root / f".trash-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        replacing = target.exists()
        if replacing:
            target.rename(trash)
        try:
            staging.rename(target)
        except BaseException:
            if replacing:
                trash.rename(target)
            raise
        finally:
            fsync_dir(self.root)
        shutil.rmtree(trash, ignore_errors=True)  # what cannot be deleted now goes at the next open

    def _folder(self, name: str) -> Path:
        ToolConfig(name=name)  # validates the name before it touches the file system
        return self.root / name

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if not p.name.startswith(".") and (p / _CONFIG_FILE).is_file())

    def exists(self, name: str) -> bool:
        return (self._folder(name) / _CONFIG_FILE).is_file()

    def get(self, name: str) -> Tool:
        folder = self._folder(name)
        path = folder / _CONFIG_FILE
        if not path.is_file():
            known = ", ".join(self.names()) or "none yet"
            raise InspectorError(f"no tool named '{name}' (tools: {known})")
        try:
            config = ToolConfig.from_json(read_json(path))
        except InspectorError as exc:
            raise InspectorError(f"{path} is damaged ({exc}): restore it or re-import the tool") from None
        return Tool(folder, config)

    def create(self, name: str, **settings: Any) -> Tool:
        require(CONFIGURE)
        if self.exists(name):
            raise InspectorError(f"a tool named '{name}' already exists")
        kind = get_kind(settings.get("kind", ToolConfig.kind))
        tool = Tool(self._folder(name), ToolConfig(name=name, **{**kind.new_tool, **settings}))
        tool.folder.mkdir(parents=True, exist_ok=True)
        tool.save()
        announce(name, "created", kind=tool.config.kind, profile=tool.config.profile)
        return tool

    def get_or_create(self, name: str, **settings: Any) -> Tool:
        return self.get(name) if self.exists(name) else self.create(name, **settings)

    def all(self) -> list[Tool]:
        """Every tool that opens: one damaged tool file must not take the station down."""
        return self.scan()[0]

    def scan(self) -> tuple[list[Tool], dict[str, str]]:
        """The tools that open, and those that do not, each with what to do about it."""
        tools, broken = [], {}
        for name in self.names():
            try:
                tools.append(self.get(name))
            except InspectorError as exc:
                broken[name] = str(exc)
        return tools, broken

    def delete(self, name: str) -> None:
        """Delete a tool in one rename: it is gone at once, even while the line still writes into
        it (a kept crop), and a kill halfway through the removal leaves no half tool."""
        require(CONFIGURE)
        doomed = self.root / f".deleted-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.get(name).folder.rename(doomed)
        fsync_dir(self.root)
        shutil.rmtree(doomed, ignore_errors=True)  # what cannot be deleted now goes at the next open
        announce(name, "deleted")

    def rename(self, name: str, new_name: str) -> Tool:
        require(CONFIGURE)
        tool = self.get(name)
        if self.exists(new_name):
            raise InspectorError(f"a tool named '{new_name}' already exists")
        target = self._folder(new_name)
        tool.folder.rename(target)
        renamed = Tool(target, replace(tool.config, name=new_name))
        renamed.save()
        announce(new_name, "renamed", old=name)
        return renamed

    def duplicate(self, name: str, new_name: str) -> Tool:
        require(CONFIGURE)
        tool = self.get(name)
        if self.exists(new_name):
            raise InspectorError(f"a tool named '{new_name}' already exists")
        target = self._folder(new_name)
        shutil.copytree(tool.folder, target)
        copy = Tool(target, replace(tool.config, name=new_name))
        copy.save()
        announce(new_name, "duplicated", source=name)
        return copy
