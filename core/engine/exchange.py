"""Moving tools between stations: one-file export/import, and ONNX export for embedded targets.

A tool file is a zip holding ``manifest.json`` (format, tool configuration, model metadata and a
SHA-256 of every other member), ``model/`` (metadata and the safetensors weights file of its kind,
``Kind.weights_file``: a classifier head, an anomaly memory; a reading kind has none, its setup is
in the metadata) and, optionally, ``images/<class>/``. Import trusts nothing in it: members are
whitelisted by path and type, sizes are capped, checksums verified, JSON and weights parsed
without any code execution, and the tool is assembled in a hidden folder that is renamed into
place only once all of it is valid.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch import nn

from core.engine.backbones import available_profiles, create_backbone
from core.engine.inference import TrainedModel
from core.engine.kinds import KINDS, get_kind
from core.engine.model import ClassifierHead, DamagedModel, evidence_tensor
from core.engine.preprocessing import to_tensor
from core.errors import InspectorError, quoted
from core.security.access import CONFIGURE, require
from core.store.datasets import IMAGE_SUFFIXES, MAX_IMAGE_PIXELS, image_files, read_image
from core.store.tools import (MAX_JSON_BYTES, Tool, ToolConfig, ToolStore, VersionMeta, announce, parse_json,
                              version_meta_problem)
from core.store.workspace import atomic_write_bytes, fsync_dir

FORMAT = "shopfloor-inspector-tool"
FORMAT_VERSION = 1
MAX_MEMBERS = 20_000
MAX_MEMBER_BYTES = 64 * 1024 * 1024
MAX_MANIFEST_BYTES = MAX_JSON_BYTES
MAX_TOTAL_BYTES = 2 * 1024 * 1024 * 1024
MAX_COMPRESSION_RATIO = 200
_VERSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_READABLE_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)  # what 'inspector export' writes
_CHUNK = 1024 * 1024
_MODEL_FILES = {"model/meta.json", *(f"model/{kind.weights_file}" for kind in KINDS.values()
                                     if kind.weights_file)}
_TRIAL_FRAME = (480, 640, 3)  # the test images a reading kind's version is run on at import


def _version_files(kind: str) -> set[str]:
    """The files a version of ``kind`` holds (its metadata, and its weights if it has any)."""
    weights = get_kind(kind).weights_file
    return {"meta.json", *([weights] if weights else [])}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def export_tool(tool: Tool, destination: Path, include_images: bool = False) -> Path:
    """Write the tool's configuration, active model and (optionally) images to one file."""
    members: dict[str, bytes] = {}
    if tool.config.active_version:
        folder = tool.version_dir()
        for name in sorted(_version_files(tool.version_meta().kind)):
            members[f"model/{name}"] = (folder / name).read_bytes()
    if include_images:
        for name in tool.config.classes:
            for path in image_files(tool.images_dir / name):
                members[f"images/{name}/{path.name}"] = path.read_bytes()
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "tool": tool.config.to_json(),
                "files": {name: {"sha256": _sha256(data), "size": len(data)}
                          for name, data in members.items()}}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", json.dumps(manifest, indent=2))
        for name, data in members.items():
            archive.writestr(name, data, compress_type=zipfile.ZIP_STORED
                             if name.startswith("images/") else zipfile.ZIP_DEFLATED)
    atomic_write_bytes(destination, buffer.getvalue())
    return destination


def _check_member_name(name: str, classes: tuple[str, ...]) -> None:
    path = PurePosixPath(name)
    if name == "manifest.json" or name in _MODEL_FILES:
        return
    if (len(path.parts) == 3 and path.parts[0] == "images" and path.parts[1] in classes
            and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")):
        return
    raise InspectorError(f"refused: unexpected member {quoted(name)} (only a manifest, a model and "
                         "images may be in a tool file)")


def _open_archive(source: Path) -> zipfile.ZipFile:
    if not source.is_file():
        raise InspectorError(f"no file at {quoted(str(source))}")
    try:
        return zipfile.ZipFile(source)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, NotImplementedError):
        raise InspectorError(f"{quoted(source.name)} is not a Shopfloor Inspector tool file (expected "
                             "a file made by 'inspector export')") from None


def _check_infos(infos: list[zipfile.ZipInfo]) -> dict[str, zipfile.ZipInfo]:
    """The members by name, once their count, paths, types, methods and declared sizes are safe
    (nothing is unpacked yet)."""
    if len(infos) > MAX_MEMBERS:
        raise InspectorError(f"refused: {len(infos)} members is more than {MAX_MEMBERS}")
    if sum(i.file_size for i in infos) > MAX_TOTAL_BYTES:
        raise InspectorError(f"refused: the file unpacks to more than {MAX_TOTAL_BYTES // 2**30} GB")
    members: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name, where = info.filename, quoted(info.filename)
        if name.startswith("/") or "\\" in name or ".." in PurePosixPath(name).parts or ":" in name:
            raise InspectorError(f"refused: the file contains an unsafe path {where}")
        if name in members:
            raise InspectorError(f"refused: {where} is in the file twice")
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise InspectorError(f"refused: {where} is a symbolic link")
        if info.flag_bits & 0x1:
            raise InspectorError(f"refused: {where} is encrypted; export the tool again without a "
                                 "password")
        if info.compress_type not in _READABLE_METHODS:
            raise InspectorError(f"refused: {where} is compressed with method {info.compress_type}; "
                                 "a tool file uses stored or deflated members: export it again")
        limit = MAX_MANIFEST_BYTES if name == "manifest.json" else MAX_MEMBER_BYTES
        if info.file_size > limit or (
                info.compress_size and info.file_size / info.compress_size > MAX_COMPRESSION_RATIO):
            raise InspectorError(f"refused: {where} is too large")
        if not info.is_dir():
            members[name] = info
    return members


@contextlib.contextmanager
def _unpacking(name: str) -> Iterator[None]:
    """Turn a member that cannot be unpacked (damaged data, a bad CRC, an unknown method) into
    one refusal."""
    try:
        yield
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise InspectorError(f"refused: {quoted(name)} cannot be unpacked ({quoted(str(exc))}); the "
                             "file is damaged: export it again") from None


def _chunks(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> Iterator[bytes]:
    """A member's data in pieces, stopped past ``limit`` bytes whatever its header declares."""
    read = 0
    with _unpacking(info.filename), archive.open(info) as member:
        while chunk := member.read(_CHUNK):
            read += len(chunk)
            if read > limit:
                raise InspectorError(f"refused: {quoted(info.filename)} unpacks to more than "
                                     f"{limit // 2**20} MB")
            yield chunk


def _check_listed(name: str, digest: str, size: int, listed: dict) -> None:
    expected = listed.get(name)
    if not isinstance(expected, dict) or expected.get("sha256") != digest or expected.get("size") != size:
        raise InspectorError(f"refused: {quoted(name)} does not match its checksum; the file is "
                             "damaged or was altered")


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, listed: dict | None,
                 limit: int) -> bytes:
    """A small member's bytes (the manifest, a model's metadata), read with ``limit``."""
    data = b"".join(_chunks(archive, info, limit))
    if listed is not None:
        _check_listed(info.filename, _sha256(data), len(data), listed)
    return data


def _extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, listed: dict, destination: Path) -> None:
    """Stream a member to ``destination`` (flushed to disk), checking its size and checksum on the
    way: no member is ever held in memory whole."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    with open(destination, "xb") as out:
        for chunk in _chunks(archive, info, MAX_MEMBER_BYTES):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    _check_listed(info.filename, digest.hexdigest(), size, listed)


def _check_manifest(manifest: object) -> dict:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InspectorError("refused: manifest.json does not describe a Shopfloor Inspector tool")
    version = manifest.get("format_version", 0)
    if type(version) is not int:
        raise InspectorError("refused: manifest.json's format_version is not a whole number")
    if version > FORMAT_VERSION:
        raise InspectorError("this tool file was made by a newer Shopfloor Inspector: update "
                             "this station first")
    listed = manifest.get("files")
    if not isinstance(listed, dict) or not all(
            isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
            and type(entry.get("size")) is int for entry in listed.values()):
        raise InspectorError("refused: manifest.json lists no files, or lists them without a "
                             "checksum and size each")
    return manifest


def _read_manifest(archive: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], source: Path) -> dict:
    if "manifest.json" not in members:
        raise InspectorError(f"{quoted(source.name)} has no manifest.json: not a tool file")
    data = _read_member(archive, members["manifest.json"], None, MAX_MANIFEST_BYTES)
    try:
        manifest = parse_json(data)
    except InspectorError as exc:
        raise InspectorError(f"refused: manifest.json is {exc}") from None
    return _check_manifest(manifest)


def import_tool(source: Path, store: ToolStore | None = None, name: str | None = None,
                replace_existing: bool = False) -> Tool:
    """Validate a tool file completely, then install it as a tool (optionally under a new name).

    The tool is unpacked into a staging folder of its own, its model loaded and run on test
    images, and only then swapped in (``ToolStore.install``): a refused, interrupted or killed
    import leaves the station's tools as they were. Only a role that may change tools imports.
    """
    require(CONFIGURE)
    store = store or ToolStore()
    source = Path(source)
    with _open_archive(source) as archive:
        members = _check_infos(archive.infolist())
        manifest = _read_manifest(archive, members, source)
        config = ToolConfig.from_json(manifest.get("tool"))
        config = ToolConfig.from_json({**config.to_json(), "name": name or config.name})
        if store.exists(config.name) and not replace_existing:
            raise InspectorError(f"a tool named '{config.name}' already exists: import it under "
                                 "another name or replace it")
        for member in members:
            _check_member_name(member, config.classes)
        listed = manifest["files"]
        missing = sorted(set(listed) - set(members))
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise InspectorError(f"refused: the file lacks {', '.join(map(quoted, missing[:3]))}{more}, "
                                 "listed in its manifest")
        model_files = _MODEL_FILES & set(members)
        meta = _model_meta(archive, members, listed, config) if model_files else None
        if meta is not None and model_files != {f"model/{name}" for name in _version_files(meta.kind)}:
            found = ", ".join(sorted(PurePosixPath(member).name for member in model_files))
            weights = get_kind(meta.kind).weights_file
            raise InspectorError(f"refused: a {meta.kind} model must hold exactly meta.json"
                                 f"{f' and {weights}' if weights else ''}; it holds {found}")
        staging = store.staging(config.name)
        try:
            version = meta.id if meta is not None else None
            images = []
            for member, info in members.items():
                if member == "manifest.json":
                    continue
                inside = PurePosixPath(member)
                target = (staging / "versions" / version / inside.name if member in model_files
                          else staging / inside)
                _extract(archive, info, listed, target)
                if member.startswith("images/"):
                    images.append(target)
            tool = Tool(staging, ToolConfig.from_json({**config.to_json(), "active_version": version}))
            _check_model(tool)
            sample = _check_images(images)
            tool.save()
            if version is not None:
                _trial_run(tool, sample)
            for folder in [staging, *(p for p in staging.rglob("*") if p.is_dir())]:
                fsync_dir(folder)
            store.install(staging, config.name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    announce(config.name, "imported", source=source.name, version=version)
    return store.get(config.name)


def _model_meta(archive: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], listed: dict,
                config: ToolConfig) -> VersionMeta:
    """The packed model's metadata, checked against the tool it comes with."""
    if "model/meta.json" not in members:
        raise InspectorError("refused: the model's meta.json is missing")
    data = _read_member(archive, members["model/meta.json"], listed, MAX_JSON_BYTES)
    try:
        meta = parse_json(data)
    except InspectorError as exc:
        raise InspectorError(f"refused: the model's meta.json is {exc}") from None
    if not isinstance(meta, dict) or "id" not in meta:
        raise InspectorError("refused: the model's meta.json lacks its id")
    if not isinstance(meta["id"], str) or not _VERSION_ID.fullmatch(meta["id"]):
        raise InspectorError(f"refused: model version id {quoted(meta['id'])} is not a safe name")
    problem = version_meta_problem(meta)
    if problem:
        raise InspectorError(f"refused: the model's meta.json is damaged ({problem})")
    version = VersionMeta.from_json(meta)
    if version.kind != config.kind:
        raise InspectorError(f"refused: the model is a {version.kind} model but the tool is a "
                             f"{config.kind} tool")
    if get_kind(version.kind).neural:
        if version.profile is None:
            raise InspectorError("refused: the model's meta.json lacks its network profile")
        for profile in (version.profile, config.profile):
            if profile not in available_profiles():
                raise InspectorError(f"refused: this station has no network profile {quoted(profile)}; "
                                     f"it has {', '.join(available_profiles())}")
    return version


def _check_model(tool: Tool) -> None:
    """Load the staged version as the station will (every array, shape and setting checked)."""
    if not tool.config.active_version:
        return
    kind = get_kind(tool.config.kind)
    try:
        kind.check_import(kind.load(tool.version_dir(), tool.version_meta()), tool.config)
    except DamagedModel as exc:
        raise InspectorError(f"refused: the model's {exc.path.name} is damaged ({exc.problem}); "
                             "export the tool again from a station where it works") from None


def _check_images(paths: list[Path]) -> np.ndarray | None:
    """Refuse a photo that does not decode (or is over the pixel limit); return the first photo,
    a sample the trial run scores."""
    sample = None
    for path in paths:
        image = read_image(path)
        if image is None:
            member = "/".join(path.parts[-3:])
            raise InspectorError(f"refused: {quoted(member)} is not a readable image (PNG, JPEG, "
                                 f"BMP, TIFF or WebP of at most {MAX_IMAGE_PIXELS // 10**6} megapixels)")
        sample = image if sample is None else sample
    return sample


def _trial_run(tool: Tool, sample: np.ndarray | None) -> None:
    """Run the staged version on a blank image, a noise image and a photo of the file: its scores
    must be numbers in 0..1 and its heatmaps finite, or it is refused. A model whose arrays are
    each sound can still overflow to NaN, and NaN is never above a threshold: every part would
    PASS. A reading version reads the images as a trigger would send them, with a value."""
    try:
        model = TrainedModel(tool)
        shape = (model.input_shape.height, model.input_shape.width, 3) if model.kind.neural else _TRIAL_FRAME
        images = [np.full(shape, 128, np.uint8),
                  np.random.default_rng(0).integers(0, 256, shape, np.uint8)]
        images += [sample] if sample is not None else []
        with np.errstate(all="ignore"):  # an overflow is judged below, not printed
            if model.kind.neural:
                explained = model.explain(images)
                scores, heats = [e.score for e in explained], [e.heat for e in explained]
            else:
                scores, heats = [model.judge.read(image, "trial").score for image in images], []
    except InspectorError:
        raise
    except Exception as exc:  # noqa: BLE001 - a hostile model may fail in any way: refuse it
        raise InspectorError(f"refused: the model does not run on this station "
                             f"({quoted(f'{type(exc).__name__}: {exc}')}); export it again from a "
                             "station where it works") from None
    if not (all(0 <= score <= 1 for score in scores) and all(np.isfinite(heat).all() for heat in heats)):
        raise InspectorError("refused: the model's scores on test images are not numbers in 0..1: "
                             "it is damaged; export it again from a station where it works")


class _FullModel(nn.Module):
    """Backbone plus pooling, local evidence and head as one graph: normalised image in,
    probabilities out."""

    def __init__(self, tool: Tool, head: ClassifierHead):
        super().__init__()
        self.backbone = create_backbone(tool.version_meta().profile)
        self.register_buffer("mean", torch.from_numpy(head.mean))
        self.register_buffer("std", torch.from_numpy(head.std))
        self.linear = nn.Linear(head.weight.shape[1], head.weight.shape[0])
        self.linear.weight.data = torch.from_numpy(head.weight)
        self.linear.bias.data = torch.from_numpy(head.bias)
        self.good = head.good_index
        self.top = head.patch_top
        if self.top:
            self.register_buffer("patch_weight", torch.from_numpy(head.patch_weight))
            self.register_buffer("defects", (torch.arange(len(head.classes)) != self.good).float())
            self.patch_bias = head.patch_bias

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mid, last, _ = self.backbone(image)
        pooled = torch.cat([last.mean((2, 3)), mid.mean((2, 3)), mid.amax((2, 3))], dim=1)
        logits = self.linear((pooled - self.mean) / self.std)
        if self.top:
            evidence = evidence_tensor(mid, self.patch_weight, self.patch_bias)
            local = evidence.topk(min(self.top, evidence.shape[1]), dim=1).values.mean(1)
            logits = logits + local[:, None] * self.defects
        probabilities = torch.softmax(logits, dim=1)
        return probabilities, 1.0 - probabilities[:, self.good]


def export_onnx(tool: Tool, destination: Path, check_images: list[np.ndarray] | None = None) -> dict:
    """Export the active model as one ONNX graph and check onnxruntime agrees with the engine.

    Input ``image``: float32 (N, 3, H, W), RGB scaled to 0..1 then normalised with the profile's
    mean and std (shape, mean and std are stored in the graph's metadata). Outputs:
    ``probabilities`` and ``defect_score``.
    """
    import onnx
    import onnxruntime as ort

    model = TrainedModel(tool)
    if not model.kind.onnx:
        article = "an" if model.kind.name[0] in "aeiou" else "a"
        raise InspectorError(f"'{tool.name}' is {article} {model.kind.name} tool: ONNX export covers "
                             "classifier tools; move it to another station with 'inspector export "
                             "--out FILE' instead")
    full = _FullModel(tool, model.head).eval()
    shape = model.input_shape
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(full, torch.zeros(1, 3, shape.height, shape.width), buffer, input_names=["image"],
                          output_names=["probabilities", "defect_score"], opset_version=17,
                          dynamo=False, dynamic_axes={"image": {0: "n"}, "probabilities": {0: "n"},
                                                      "defect_score": {0: "n"}})
    graph = onnx.load_from_string(buffer.getvalue())
    info = {"tool": tool.name, "version": model.version, "classes": json.dumps(model.head.classes),
            "input_height": str(shape.height), "input_width": str(shape.width),
            "mean": json.dumps(model.profile.mean),
            "std": json.dumps(model.profile.std), "channel_order": "RGB",
            "threshold": str(tool.config.threshold)}
    for key, value in info.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    data = graph.SerializeToString()

    images = check_images or [np.random.default_rng(0).integers(0, 255, (shape.height, shape.width, 3),
                                                                  np.uint8) for _ in range(4)]
    batch = to_tensor(images, shape, model.profile.mean, model.profile.std)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    onnx_scores = session.run(None, {"image": batch})[1]
    engine_scores = model.head.defect_scores(model.probabilities(images))
    difference = float(np.abs(onnx_scores - engine_scores).max())
    if difference > 1e-3:
        raise InspectorError(f"the ONNX export disagrees with the engine by {difference:.2g}; "
                             "nothing was written")
    atomic_write_bytes(destination, data)
    return {"path": str(destination), "max_score_difference": difference, "images": len(images)}
