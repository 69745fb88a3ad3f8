"""The backbone registry: built-in EfficientNet-Lite profiles and torchvision weights found on disk."""

import numpy as np
import pytest
import torch

from core.engine.backbones import available_profiles, create_backbone, get_profile
from core.engine.preprocessing import InputShape, to_tensor
from core.engine.runtime import FeatureExtractor
from core.engine.training import TrainingOptions, train_tool
from core.errors import InspectorError
from core.store.tools import ToolStore
from tests.conftest import load_sample


def test_three_builtin_profiles_from_fastest_to_most_accurate():
    profiles = available_profiles()
    assert [profiles[n].architecture for n in ("fast", "balanced", "accurate")] == [
        "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert [profiles[n].input_size for n in ("fast", "balanced", "accurate")] == [192, 240, 260]


@pytest.mark.parametrize("name, mid_channels, fine_channels", [("fast", 112, 40), ("accurate", 120, 48)])
def test_pretrained_checkpoint_loads_completely(name, mid_channels, fine_channels):
    backbone = create_backbone(name)
    assert backbone.channels == {"mid": mid_channels, "last": 1280, "fine": fine_channels}
    size = backbone.profile.input_size
    mid, last, fine = backbone(torch.zeros(1, 3, size, size))
    assert mid.shape[2] == -(-size // 16) and last.shape[2] == -(-size // 32)
    assert fine.shape[1:3] == (backbone.channels["fine"], -(-size // 8))
    assert not any(p.requires_grad for p in backbone.parameters())


def test_imagenet_features_separate_real_parts_from_noise():
    """Pretrained (not random) weights: real photos of one part type have similar features."""
    backbone = create_backbone("fast")
    photos = load_sample("casting", 4, seed=60).images[:4]
    batch = torch.from_numpy(to_tensor(photos, InputShape(224, 224), (0.5,) * 3, (0.5,) * 3))
    noise = torch.rand_like(batch) * 2 - 1
    with torch.no_grad():
        real = backbone(batch)[1].mean((2, 3))
        random = backbone(noise)[1].mean((2, 3))
    cos = torch.nn.functional.cosine_similarity
    assert cos(real[0], real[1], dim=0) > cos(real[0], random[0], dim=0) + 0.1


def test_onnx_runtime_and_torch_agree(workspace):
    backbone = create_backbone("fast")
    x = np.random.default_rng(0).standard_normal((2, 3, 192, 192)).astype(np.float32)
    extractor = FeatureExtractor(get_profile("fast"))
    maps = extractor.maps(x)
    with torch.no_grad():
        reference = backbone(torch.from_numpy(x))
    for name, ours, theirs in zip(maps._fields, maps, reference):
        np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-3, err_msg=name)


def test_unknown_profile_is_refused():
    with pytest.raises(InspectorError, match="choose one of: fast, balanced, accurate"):
        get_profile("gigantic")


def test_a_torchvision_weights_file_on_disk_becomes_a_profile(workspace):
    from torchvision.models import resnet18

    (workspace / "weights").mkdir(parents=True)
    torch.save(resnet18(weights=None).state_dict(), workspace / "weights" / "resnet18-test.pth")
    assert "tv-resnet18" in available_profiles()
    backbone = create_backbone("tv-resnet18")
    assert backbone.channels == {"mid": 256, "last": 512, "fine": 128}
    tool = ToolStore().create("resnet tool", profile="tv-resnet18")
    meta = train_tool(tool, load_sample("casting", 5, seed=61), TrainingOptions(views_per_image=1))
    assert meta.profile == "tv-resnet18"
