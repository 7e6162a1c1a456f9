"""The export's INT8 accuracy check: INT8 against FP32, overall and per class, with a fake-quant run
of the same Q/DQ graph that tells bad scales from integer-kernel effects.

Three scores of one Q/DQ file on the same images: FP32 (the ONNX FP32 graph), *kernel* (ONNX
Runtime with its graph optimizations: fused integer kernels, what a CPU deployment runs) and
*fake-quant* (optimizations off: Quantize/Dequantize computed in float around float convolutions,
close to what TensorRT's INT8 kernels compute). fake-quant - FP32 is the loss of the calibration
scales; kernel - fake-quant is the loss of this CPU's integer arithmetic (e.g. 16-bit saturation on
x86 CPUs without VNNI).

Which score is gated: the CPU file runs on CPUs, so its kernel score; the TensorRT file runs in
TensorRT, so its fake-quant score (its ONNX Runtime kernel score is reported, not gated).
Drops are in mIoU points (1 point = 0.01 mIoU).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..formats import MAX_INT8_CLASS_DROP, MAX_INT8_MIOU_DROP

#: Defaults of ``export --max-int8-drop`` / ``--max-int8-class-drop`` (points), from :mod:`unet_edge.formats`.
MAX_MIOU_DROP = MAX_INT8_MIOU_DROP
MAX_CLASS_DROP = MAX_INT8_CLASS_DROP


_SCALES_CAUSE = "the calibration scales are the cause: try --calib-method percentile or minmax, or more --calib-images"
#: A file with no fake-quant run (OpenVINO's INT8 IR: NNCF quantizes it, and OpenVINO has no
#: reference mode that computes its Q/DQ in float), so scales and kernels cannot be told apart.
_NO_SPLIT = ("no fake-quant run separates the scales' loss from the integer kernels' for this file: try more "
             "--calib-images")
#: NNCF's other preset (``nncf.QuantizationPreset.MIXED``: asymmetric activations) as a remedy for
#: OpenVINO's INT8 IR, whose activations are symmetric under the default ``performance``.
_OPENVINO_PRESET = " or --openvino-preset mixed (asymmetric activations)"


@dataclass(frozen=True)
class Int8Check:
    """The verdict for one INT8 file. Drops are FP32 minus INT8, in points (positive = worse)."""

    key: str
    gated: str
    miou_drop: float
    worst_class: str | None
    worst_class_drop: float
    fake_quant_drop: float | None
    kernel_effect: float | None
    per_class_drop: dict
    passed: bool
    max_miou_drop: float
    max_class_drop: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def message(self, file_name: str, split: str, int8_family: str) -> str:
        """A sentence naming the loss and, for a failed check, its likely cause and what to do (a
        passed check gets no remedy: there is nothing to fix). A fake-quant-gated file (TensorRT's)
        is blamed on its scales; a kernel-gated one on this CPU's integer kernels when they lose more
        than the scales (and more than half a point), else on the scales; one with no fake-quant run
        (OpenVINO's) gets the remedies that act on either (more calibration images, NNCF's mixed preset)."""
        s = (f"{file_name} ({self.gated} run) loses {self.miou_drop:.2f} mIoU points against FP32 on {split} "
             f"(limit {self.max_miou_drop:g}); worst class {self.worst_class} -{self.worst_class_drop:.1f} points "
             f"(limit {self.max_class_drop:g})")
        if self.passed:
            return s + ": within the limits"
        if self.gated == "fake-quant":
            # the gated run has no integer kernels: only the scales can have failed it (the ONNX
            # Runtime kernel score of a TensorRT file is no fault of the file)
            s += f". The failing run is the fake-quant one (what TensorRT computes), so {_SCALES_CAUSE}"
        elif self.kernel_effect is not None and self.fake_quant_drop is not None:
            if self.kernel_effect > max(0.5, self.fake_quant_drop):
                s += (f". The fake-quant run of the same graph loses only {self.fake_quant_drop:.2f} points, so the "
                      f"loss comes from this CPU's integer kernels ({int8_family}): re-export with "
                      f"--int8-target x86-avx2 (7-bit weights, no 16-bit saturation)")
            else:
                s += f". The fake-quant run loses {self.fake_quant_drop:.2f} points too, so {_SCALES_CAUSE}"
        else:
            s += f". {_NO_SPLIT[0].upper()}{_NO_SPLIT[1:]}" + (_OPENVINO_PRESET if self.key.startswith("openvino") else "")
        return s + "; pass --allow-int8-drop to keep the file anyway"


def _points(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return round((a - b) * 100, 3)


def check_int8(key: str, fp32: dict, kernel: dict, fake_quant: dict | None, gate: str = "kernel",
               max_miou_drop: float = MAX_MIOU_DROP, max_class_drop: float = MAX_CLASS_DROP) -> Int8Check:
    """Compare INT8 metrics with FP32 metrics (dicts of :func:`unet_edge.evaluate.evaluate`).

    Args:
        key: the artifact's report key, e.g. ``onnx_int8_cpu``.
        fp32, kernel, fake_quant: metrics with ``miou`` and ``per_class_iou`` ({name: IoU or None});
            classes absent from the images (None) are not compared.
        gate: ``kernel`` or ``fake_quant``: which INT8 run must stay within the limits.
        max_miou_drop, max_class_drop: limits in points.

    Raises:
        ValueError: ``gate`` is ``fake_quant`` without fake-quant metrics, or unknown.
    """
    if gate not in ("kernel", "fake_quant") or (gate == "fake_quant" and fake_quant is None):
        raise ValueError(f"gate must be kernel or fake_quant (with its metrics); got {gate!r}")
    gated = kernel if gate == "kernel" else fake_quant
    per_class = {}
    for name, ref in fp32["per_class_iou"].items():
        d = _points(ref, gated["per_class_iou"].get(name))
        if d is not None:
            per_class[name] = d
    worst = max(per_class, key=per_class.get) if per_class else None
    worst_drop = per_class[worst] if worst else 0.0
    miou_drop = _points(fp32["miou"], gated["miou"])
    fq_drop = _points(fp32["miou"], fake_quant["miou"]) if fake_quant else None
    kernel_effect = _points(fake_quant["miou"], kernel["miou"]) if fake_quant else None
    passed = miou_drop <= max_miou_drop and worst_drop <= max_class_drop
    return Int8Check(key=key, gated=gate.replace("_", "-"), miou_drop=miou_drop, worst_class=worst,
                     worst_class_drop=worst_drop, fake_quant_drop=fq_drop, kernel_effect=kernel_effect,
                     per_class_drop=per_class, passed=passed, max_miou_drop=max_miou_drop, max_class_drop=max_class_drop)
