"""Moving tools between stations: one-file export/import, and ONNX export for embedded targets.

A tool file is a zip holding ``manifest.json`` (format, tool configuration, model metadata and a
SHA-256 of every other member), ``model/`` (metadata and the safetensors weights of its kind: a
classifier head or an anomaly memory) and, optionally,
``images/<class>/``. Import trusts nothing in it: members are whitelisted by path and type, sizes
are capped, checksums verified, JSON and weights parsed without any code execution, and the tool
is assembled in a hidden folder that is renamed into place only once all of it is valid.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import warnings
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch import nn

from core.anomaly import MEMORY_FILE, AnomalyModel
from core.backbones import create_backbone, get_profile
from core.datasets import IMAGE_SUFFIXES, decode_image, image_files
from core.errors import InspectorError
from core.inference import TrainedModel
from core.model import WEIGHTS_FILE, ClassifierHead, evidence_tensor
from core.preprocessing import to_tensor
from core.tools import Tool, ToolConfig, ToolStore, announce
from core.workspace import atomic_write_bytes, fsync_dir

FORMAT = "shopfloor-inspector-tool"
FORMAT_VERSION = 1
MAX_MEMBERS = 20_000
MAX_MEMBER_BYTES = 64 * 1024 * 1024
MAX_TOTAL_BYTES = 2 * 1024 * 1024 * 1024
MAX_COMPRESSION_RATIO = 200
_VERSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_WEIGHTS_OF_KIND = {"classifier": WEIGHTS_FILE, "anomaly": MEMORY_FILE}
_MODEL_FILES = {"model/meta.json", *(f"model/{name}" for name in _WEIGHTS_OF_KIND.values())}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def export_tool(tool: Tool, destination: Path, include_images: bool = False) -> Path:
    """Write the tool's configuration, active model and (optionally) images to one file."""
    members: dict[str, bytes] = {}
    if tool.config.active_version:
        folder = tool.version_dir()
        weights = _WEIGHTS_OF_KIND[tool.version_meta().get("kind", "classifier")]
        members[f"model/{weights}"] = (folder / weights).read_bytes()
        members["model/meta.json"] = (folder / "meta.json").read_bytes()
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
    if name.startswith("/") or "\\" in name or ".." in path.parts or ":" in name:
        raise InspectorError(f"refused: the file contains an unsafe path '{name}'")
    if name == "manifest.json" or name in _MODEL_FILES:
        return
    if (len(path.parts) == 3 and path.parts[0] == "images" and path.parts[1] in classes
            and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")):
        return
    raise InspectorError(f"refused: unexpected member '{name}' (only a manifest, a model and "
                         "images may be in a tool file)")


def _read_members(source: Path) -> tuple[dict, dict[str, bytes]]:
    if not source.is_file():
        raise InspectorError(f"no file at {source}")
    if not zipfile.is_zipfile(source):
        raise InspectorError(f"{source.name} is not a Shopfloor Inspector tool file (expected "
                             "a file made by 'inspector export')")
    with zipfile.ZipFile(source) as archive:
        infos = archive.infolist()
        if len(infos) > MAX_MEMBERS:
            raise InspectorError(f"refused: {len(infos)} members is more than {MAX_MEMBERS}")
        if sum(i.file_size for i in infos) > MAX_TOTAL_BYTES:
            raise InspectorError("refused: the file unpacks to more than 2 GB")
        names = [i.filename for i in infos]
        if "manifest.json" not in names:
            raise InspectorError(f"{source.name} has no manifest.json: not a tool file")
        try:
            manifest = json.loads(archive.read("manifest.json"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InspectorError(f"refused: manifest.json is not valid JSON ({exc})") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise InspectorError("refused: manifest.json does not describe a Shopfloor Inspector tool")
        if manifest.get("format_version", 0) > FORMAT_VERSION:
            raise InspectorError("this tool file was made by a newer Shopfloor Inspector: update "
                                 "this station first")
        config = ToolConfig.from_json(manifest.get("tool"))
        listed = manifest.get("files")
        if not isinstance(listed, dict):
            raise InspectorError("refused: manifest.json lists no files")
        members: dict[str, bytes] = {}
        for info in infos:
            if info.filename == "manifest.json" or info.is_dir():
                continue
            _check_member_name(info.filename, config.classes)
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise InspectorError(f"refused: '{info.filename}' is a symbolic link")
            if info.file_size > MAX_MEMBER_BYTES or (
                    info.compress_size and info.file_size / info.compress_size > MAX_COMPRESSION_RATIO):
                raise InspectorError(f"refused: '{info.filename}' is too large")
            data = archive.read(info)
            expected = listed.get(info.filename)
            if not isinstance(expected, dict) or expected.get("sha256") != _sha256(data):
                raise InspectorError(f"refused: '{info.filename}' does not match its checksum; "
                                     "the file is damaged or was altered")
            members[info.filename] = data
        missing = sorted(set(listed) - set(members))
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise InspectorError(f"refused: the file lacks {', '.join(missing[:3])}{more}, listed in "
                                 "its manifest")
    return manifest, members


def import_tool(source: Path, store: ToolStore | None = None, name: str | None = None,
                replace_existing: bool = False) -> Tool:
    """Validate a tool file completely, then install it as a tool (optionally under a new name)."""
    store = store or ToolStore()
    manifest, members = _read_members(Path(source))
    config_json = dict(manifest["tool"])
    config_json["name"] = name or config_json["name"]
    config = ToolConfig.from_json(config_json)
    if store.exists(config.name) and not replace_existing:
        raise InspectorError(f"a tool named '{config.name}' already exists: import it under "
                             "another name or replace it")
    model_files = _MODEL_FILES & set(members)
    has_model = bool(model_files)
    if has_model:
        meta = _model_meta(members, config)
        if model_files != {"model/meta.json", f"model/{_WEIGHTS_OF_KIND[meta['kind']]}"}:
            found = ", ".join(sorted(PurePosixPath(member).name for member in model_files))
            raise InspectorError(f"refused: a {meta['kind']} model must hold exactly meta.json and "
                                 f"{_WEIGHTS_OF_KIND[meta['kind']]}; it holds {found}")
        get_profile(meta["profile"])
    for member, data in members.items():
        if member.startswith("images/") and decode_image(data) is None:
            raise InspectorError(f"refused: '{member}' is not a readable image")

    store.root.mkdir(parents=True, exist_ok=True)
    staging = store.root / f".import-{config.name}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        version = None
        if has_model:
            version = str(meta["id"])
            folder = staging / "versions" / version
            if not _VERSION_ID.fullmatch(version):
                raise InspectorError(f"refused: model version id '{version}' is not a safe name")
            for member in model_files:
                atomic_write_bytes(folder / PurePosixPath(member).name, members[member])
            if meta["kind"] == "anomaly":
                AnomalyModel.load(folder)
            elif tuple(ClassifierHead.load(folder).classes) != config.classes:
                raise InspectorError("refused: the model's classes differ from the tool's")
        for member, data in members.items():
            if member.startswith("images/"):
                atomic_write_bytes(staging / member, data)
        tool = Tool(staging, ToolConfig.from_json({**config.to_json(), "active_version": version}))
        tool.save()
        target = store.root / config.name
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        fsync_dir(store.root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    announce(config.name, "imported", source=Path(source).name, version=version)
    return store.get(config.name)


def _model_meta(members: dict[str, bytes], config: ToolConfig) -> dict:
    """The packed model's metadata, checked against the tool it comes with."""
    try:
        meta = json.loads(members["model/meta.json"])
    except (KeyError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InspectorError(f"refused: the model's meta.json is missing or not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or not {"id", "profile"} <= set(meta):
        raise InspectorError("refused: the model's meta.json lacks its id or profile")
    meta.setdefault("kind", "classifier")
    if meta["kind"] != config.kind:
        raise InspectorError(f"refused: the model is a {meta['kind']} model but the tool is a "
                             f"{config.kind} tool")
    return meta


class _FullModel(nn.Module):
    """Backbone plus pooling, local evidence and head as one graph: normalised image in,
    probabilities out."""

    def __init__(self, tool: Tool, head: ClassifierHead):
        super().__init__()
        self.backbone = create_backbone(tool.version_meta()["profile"])
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
    if model.head is None:
        raise InspectorError(f"'{tool.name}' is an anomaly tool: ONNX export covers classifier tools; "
                             "move it to another station with 'inspector export --out FILE' instead")
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
