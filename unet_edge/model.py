"""U-Net for semantic segmentation (Ronneberger, Fischer, Brox, MICCAI 2015, arXiv:1505.04597).

Encoder: ``depth`` stages of DoubleConv (3x3 conv, BN, ReLU, twice) each followed by 2x2 max-pool;
a DoubleConv bottleneck; decoder: 2x2 ConvTranspose2d upsampling, concatenation with the skip
connection, DoubleConv; a 1x1 head. Padded ("same") convolutions keep H and W, unlike the paper's
valid convolutions, so the logits have the input's spatial size.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UnetEdgeError


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a :class:`UNet`.

    Attributes:
        num_classes: K output channels; 1 means a binary (sigmoid) head, >1 a softmax head.
        in_channels: input image channels (3 for RGB).
        base_channels: channels of the first stage; stage i has ``base_channels * 2**i``.
        depth: number of down-sampling stages; H and W are padded to a multiple of ``2**depth``.
        dropout: dropout probability applied in the bottleneck (0 disables it).
    """

    num_classes: int
    in_channels: int = 3
    base_channels: int = 16
    depth: int = 4
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        return cls(**{k: d[k] for k in ("num_classes", "in_channels", "base_channels", "depth", "dropout") if k in d})


#: Named presets: ``unet`` has the paper's widths (64..1024); ``edge`` is 16x lighter per layer.
PRESETS: dict[str, dict] = {
    "unet": {"base_channels": 64, "depth": 4},
    "edge": {"base_channels": 16, "depth": 4},
    "edge-wide": {"base_channels": 32, "depth": 4},
    "tiny": {"base_channels": 8, "depth": 3},
}


def config_from_preset(preset: str, num_classes: int, dropout: float = 0.0) -> UNetConfig:
    """Build a :class:`UNetConfig` from a preset name in :data:`PRESETS`.

    Raises:
        UnetEdgeError: the preset name is unknown.
    """
    if preset not in PRESETS:
        raise UnetEdgeError(f"unknown model preset {preset!r}; choose one of {sorted(PRESETS)}")
    return UNetConfig(num_classes=num_classes, dropout=dropout, **PRESETS[preset])


class DoubleConv(nn.Sequential):
    """(3x3 conv -> BN -> ReLU) x 2; (N, C_in, H, W) -> (N, C_out, H, W)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class Up(nn.Module):
    """2x2 ConvTranspose2d upsampling (C -> C/2), skip concatenation, DoubleConv."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_in // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(c_in // 2 + c_out, c_out)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """U-Net mapping images (N, C_in, H, W) float32 to logits (N, K, H, W) float32.

    Any H, W are accepted: the input is zero-padded on the bottom/right to a multiple of
    ``2**depth`` and the logits are cropped back, so CamVid's 360x480 works at depth 4.
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        if config.num_classes < 1 or config.depth < 1 or config.base_channels < 1:
            raise UnetEdgeError(f"invalid U-Net config {config}: num_classes, depth and base_channels must be >= 1")
        self.config = config
        widths = [config.base_channels * 2**i for i in range(config.depth + 1)]
        self.stem = DoubleConv(config.in_channels, widths[0])
        self.down = nn.ModuleList(DoubleConv(widths[i], widths[i + 1]) for i in range(config.depth))
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout2d(config.dropout) if config.dropout > 0 else nn.Identity()
        self.up = nn.ModuleList(Up(widths[i + 1], widths[i]) for i in reversed(range(config.depth)))
        self.head = nn.Conv2d(widths[0], config.num_classes, kernel_size=1)

    @property
    def multiple(self) -> int:
        """H and W are padded internally to a multiple of this (``2**depth``)."""
        return 2**self.config.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        m = self.multiple
        pad_h, pad_w = (m - h % m) % m, (m - w % m) % m
        # Traced for export, h and w are graph values: pad and crop unconditionally (no-ops at a
        # multiple of m; onnxsim folds them for static shapes), so a dynamic-H/W graph serves any size.
        traced = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
        crop = traced or bool(pad_h or pad_w)
        if crop:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.stem(x)
        skips = [x]
        for i, block in enumerate(self.down):
            x = block(self.pool(x))
            if i < len(self.down) - 1:
                skips.append(x)
        x = self.dropout(x)
        for block, skip in zip(self.up, reversed(skips)):
            x = block(x, skip)
        logits = self.head(x)
        if crop:
            logits = logits[..., :h, :w]
        return logits


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
