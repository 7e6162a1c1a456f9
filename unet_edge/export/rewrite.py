"""Export-time graph rewrites that keep the math and make the graph faster to deploy.

``ConvTranspose2d(kernel 2, stride 2)`` is rewritten as a 1x1 ``Conv2d`` to ``4 * C_out`` channels
followed by ``PixelShuffle(2)`` (ONNX ``DepthToSpace``, mode CRD). With stride equal to the kernel,
every output pixel (2h+i, 2w+j) of channel c receives exactly one input pixel (h, w):
``y[c, 2h+i, 2w+j] = b[c] + sum_k x[k, h, w] * W[k, c, i, j]``, which is the 1x1 conv with weight
``W'[4c + 2i + j, k] = W[k, c, i, j]`` followed by the sub-pixel shuffle (Shi et al., "Real-Time
Single Image and Video Super-Resolution Using an Efficient Sub-Pixel CNN", CVPR 2016). The
reason: ONNX Runtime's CPU provider has int8 (QLinearConv) kernels for Conv but runs
ConvTranspose in FP32, which breaks the int8 NHWC chain of a quantized U-Net decoder.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class PixelShuffleUpsample(nn.Module):
    """1x1 conv (C_in -> 4*C_out) + PixelShuffle(2): (N, C_in, H, W) -> (N, C_out, 2H, 2W)."""

    def __init__(self, deconv: nn.ConvTranspose2d):
        super().__init__()
        c_in, c_out = deconv.in_channels, deconv.out_channels
        self.conv = nn.Conv2d(c_in, 4 * c_out, kernel_size=1, bias=deconv.bias is not None)
        with torch.no_grad():
            w = deconv.weight  # (C_in, C_out, 2, 2)
            self.conv.weight.copy_(w.permute(1, 2, 3, 0).reshape(4 * c_out, c_in, 1, 1))
            if deconv.bias is not None:
                self.conv.bias.copy_(deconv.bias.repeat_interleave(4))
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.conv(x))


def _is_2x2_stride2(m: nn.Module) -> bool:
    return (isinstance(m, nn.ConvTranspose2d) and m.kernel_size == (2, 2) and m.stride == (2, 2)
            and m.padding == (0, 0) and m.output_padding == (0, 0) and m.groups == 1 and m.dilation == (1, 1))


def for_deployment(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with every 2x2/stride-2 ConvTranspose2d replaced by
    :class:`PixelShuffleUpsample`; outputs equal the original's to float rounding."""
    model = copy.deepcopy(model).eval()
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if _is_2x2_stride2(child):
                setattr(module, child_name, PixelShuffleUpsample(child))
    return model
