"""Export-time graph rewrites that keep the math and make the graph faster to deploy.

``ConvTranspose2d(kernel 2, stride 2)`` is rewritten as a 1x1 ``Conv2d`` to ``4 * C_out`` channels
followed by ``PixelShuffle(2)`` (ONNX ``DepthToSpace``, mode CRD). With stride equal to the kernel,
every output pixel (2h+i, 2w+j) of channel c receives exactly one input pixel (h, w):
``y[c, 2h+i, 2w+j] = b[c] + sum_k x[k, h, w] * W[k, c, i, j]``, which is the 1x1 conv with weight
``W'[4c + 2i + j, k] = W[k, c, i, j]`` followed by the sub-pixel shuffle (Shi et al., "Real-Time
Single Image and Video Super-Resolution Using an Efficient Sub-Pixel CNN", CVPR 2016). The
reason: ONNX Runtime's CPU provider has int8 (QLinearConv) kernels for Conv but runs
ConvTranspose in FP32, which breaks the int8 NHWC chain of a quantized U-Net decoder.

:func:`interleave_depth_to_space` goes one step further for ONNX Runtime on CPU: it rewrites the
DepthToSpace of the exported ONNX graph as NHWC transposes and reshapes, which ONNX Runtime keeps in
its NHWC int8 layout (used for the CPU INT8 file only; TensorRT runs DepthToSpace natively).
"""
from __future__ import annotations

import copy

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
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


def interleave_depth_to_space(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite every ``Conv -> DepthToSpace`` of ``model`` (in place, and returned) so ONNX Runtime
    can run it in its NHWC int8 chain; the FP32 outputs are the same (bit-identical on the CamVid model).

    ONNX Runtime's CPU NHWC transformer (which turns Q/DQ Conv chains into NHWC ``QLinearConv``)
    has no NHWC DepthToSpace, so each one is wrapped in NHWC<->NCHW transposes, and the decoder's
    skip concatenation falls back to NCHW with two more. Here the 1x1 conv's output channels are
    reordered from DepthToSpace's ``CRD`` order ``c*b*b + i*b + j`` to ``(i*b + j)*C + c`` (``DCR``
    already is), and the shuffle is written for an NHWC tensor: ``Transpose(0,2,3,1)`` to
    (N, H, W, b*b*C), ``Reshape`` to (N, H, W, b, b*C), ``Transpose(0,1,3,2,4)`` to (N, H, b, W, b*C),
    ``Reshape`` to (N, b*H, b*W, C), ``Transpose(0,3,1,2)`` back to NCHW. ONNX Runtime's transpose
    optimizer cancels the outer transposes against its own layout transposes; what is left is one
    copy of contiguous rows of ``b*C`` bytes per upsampling. Measured on the CamVid edge U-Net,
    360x480, 2 cores: DepthToSpace 6.4 ms + transposes 4.0 ms -> transposes 1.1 ms.

    Only DepthToSpace nodes fed by a Conv with constant weights, whose output feeds nothing else, are
    rewritten; the rest are left as they are. Shapes may be dynamic (the output shape is computed
    with ``Shape``; onnxsim folds it for static graphs).
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    uses: dict[str, int] = {}
    for n in graph.node:
        for name in n.input:
            uses[name] = uses.get(name, 0) + 1
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        conv = producers.get(node.input[0]) if node.op_type == "DepthToSpace" else None
        if (conv is None or conv.op_type != "Conv" or uses[node.input[0]] != 1
                or any(name not in inits or uses[name] != 1 for name in conv.input[1:])):
            nodes.append(node)
            continue
        attrs = {a.name: a for a in node.attribute}
        b = attrs["blocksize"].i
        c = inits[conv.input[1]].dims[0] // (b * b)  # weight (b*b*C, C_in, kH, kW)
        if attrs.get("mode") is not None and attrs["mode"].s == b"CRD":
            order = np.arange(b * b * c).reshape(c, b * b).T.reshape(-1)
            for name in conv.input[1:]:  # weight and bias (b*b*C,)
                arr = numpy_helper.to_array(inits[name])
                inits[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(arr[order]), name))
        x, p = node.input[0], node.name or node.output[0]
        consts = {"rows": [0, 0, 0, b, b * c], "nhwc_axes": [0, 2, 3, 1], "scale": [1, b, b, 1], "channels": [1, 1, 1, b * b]}
        for key, value in consts.items():
            graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), f"{p}/{key}"))
        nodes += [
            helper.make_node("Transpose", [x], [f"{p}/nhwc"], perm=[0, 2, 3, 1], name=f"{p}/to_nhwc"),
            helper.make_node("Reshape", [f"{p}/nhwc", f"{p}/rows"], [f"{p}/split"], name=f"{p}/split"),
            helper.make_node("Transpose", [f"{p}/split"], [f"{p}/interleaved"], perm=[0, 1, 3, 2, 4], name=f"{p}/interleave"),
            helper.make_node("Shape", [x], [f"{p}/in_shape"], name=f"{p}/shape"),
            helper.make_node("Gather", [f"{p}/in_shape", f"{p}/nhwc_axes"], [f"{p}/nhwc_shape"], axis=0, name=f"{p}/gather"),
            helper.make_node("Mul", [f"{p}/nhwc_shape", f"{p}/scale"], [f"{p}/scaled"], name=f"{p}/mul"),
            helper.make_node("Div", [f"{p}/scaled", f"{p}/channels"], [f"{p}/out_shape"], name=f"{p}/div"),
            helper.make_node("Reshape", [f"{p}/interleaved", f"{p}/out_shape"], [f"{p}/merged"], name=f"{p}/merge"),
            helper.make_node("Transpose", [f"{p}/merged"], [node.output[0]], perm=[0, 3, 1, 2], name=f"{p}/to_nchw"),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    return model
