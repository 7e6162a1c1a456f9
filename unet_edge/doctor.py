"""``unet-edge doctor``: the host probe and what each stage will choose on it, with the reason
(in the spirit of ``yolo checks`` and ``polygraphy inspect capability``)."""
from __future__ import annotations

import importlib.util

from .formats import CPU_SCHEMES, CPU_TARGETS, artifact
from .host import HostInfo, probe_host
from .precision import choose_precision


def diagnose(host: HostInfo | None = None) -> dict:
    """Describe ``host`` (default: this one) and the choices made on it.

    Returns:
        ``{"host": HostInfo.to_dict(), "host_lines": {label: text}, "choices": [{"stage",
        "choice", "why"}]}`` — JSON-ready.
    """
    host = host or probe_host()
    gpu = host.cuda[0] if host.cuda else None
    lines = {
        "CPU": f"{host.cpu_model} ({host.arch})",
        "CPU class": host.cpu_class,
        "INT8 kernels": host.int8_family,
        "ISA flags": " ".join(sorted(host.flags)) or "none of the tracked ones",
        "PyTorch CPU dispatch": host.torch_cpu_capability or "?",
        "cores": f"{host.cores_physical} physical, {host.cores_logical} logical, {host.affinity} usable",
        "CUDA": ", ".join(f"cuda:{d.index} {d.name} sm {d.capability[0]}.{d.capability[1]} {d.memory_gb:g} GB"
                          for d in host.cuda) or "none",
        "ONNX Runtime providers": ", ".join(host.ort_providers) or "onnxruntime not installed",
        "TensorRT": host.tensorrt or "not installed",
        "versions": ", ".join(f"{k} {v}" for k, v in host.versions.items()),
    }
    choices = []
    cpu = choose_precision("cpu", "auto", host)
    choices.append({"stage": "train / validation (CPU)", "choice": f"{cpu.precision} autocast" if cpu.autocast else "fp32",
                    "why": cpu.reason})
    if gpu:
        g = choose_precision(f"cuda:{gpu.index}", "auto", host)
        choices.append({"stage": "train / validation (CUDA)", "choice": g.precision,
                        "why": g.reason + "; channels_last, cudnn.benchmark"})
    choices.append({"stage": "threads", "choice": str(host.default_threads),
                    "why": "physical cores usable by this process (PyTorch and ONNX Runtime; --threads overrides)"})
    t = CPU_TARGETS[host.int8_family]
    tried = " -> ".join(f"{s} ({CPU_SCHEMES[s]['weights']})" for s in t["schemes"])
    cpu_file, trt_file, cache = (artifact(k).file for k in ("onnx_int8_cpu", "onnx_int8", "calib_cache"))
    choices.append({"stage": "export --int8 (CPU file)", "choice": f"{cpu_file} for {host.int8_family}: {tried}",
                    "why": t["why"] + ("; the next scheme only when the INT8 check fails" if len(t["schemes"]) > 1 else "")})
    choices.append({"stage": "export --int8 (TensorRT file)", "choice": f"{trt_file}: symmetric int8 Q/DQ + {cache}",
                    "why": "TensorRT explicit quantization (10.x and 11.x) needs zero points of 0"})
    choices.append({"stage": "bench PyTorch BF16 row", "choice": "timed" if host.native_bf16 else "skipped",
                    "why": cpu.reason if host.native_bf16 else "bf16 is emulated on this CPU (minutes per row); --emulated times it"})
    if gpu and host.tensorrt:
        deploy = ("TensorRT engine (unet-edge build EXPORT_DIR --precision int8)",
                  f"TensorRT {host.tensorrt} and {gpu.name}: engines are built on the target GPU")
    elif gpu and "CUDAExecutionProvider" in host.ort_providers:
        deploy = (f"{artifact('onnx_fp16').file} on ONNX Runtime CUDA", "a CUDA GPU without TensorRT")
    else:
        deploy = _cpu_deploy(host, cpu_file)
    choices.append({"stage": "run / deploy", "choice": deploy[0], "why": deploy[1]})
    return {"host": host.to_dict(), "host_lines": lines, "choices": choices}


#: CPU classes where OpenVINO + NNCF INT8 and ONNX Runtime's CPU INT8 file were benched on the same
#: weights in one interleaved run (2 threads, 360x480, batch 1): class -> (OpenVINO's p50 speedup
#: over ONNX Runtime INT8, what the accuracy did, reports); each entry has a bench report behind it.
OPENVINO_MEASURED = {
    "x86-amx": (2.0, "two CamVid models: mIoU +0.48 points over ONNX Runtime INT8 on one, -0.30 on the other "
                     "(both within 1 point of FP32)",
                "benchmarks/reports/camvid-x86-amx-60m, benchmarks/reports/openvino-x86-amx"),
    "x86-avx512-vnni": (1.34, "camvid-edge v3: 20.7 against 27.7 ms; OpenVINO INT8 -0.15 points from FP32 on the "
                              "101 val images, ONNX Runtime INT8 +0.36",
                        "benchmarks/reports/camvid-x86-avx512-vnni-60m"),
    "x86-avx2": (1.18, "camvid-edge v7 (the shipped model): 68.9 against 81.5 ms, OpenVINO INT8 -0.32 points from "
                       "FP32 on the 101 val images (Fence -1.9), ONNX Runtime INT8 with 7-bit weights -0.07 "
                       "(SignSymbol -1.3); v4 on another AVX2-only EPYC 1.10x, -0.45 against -0.03: take the ONNX "
                       "Runtime file where that quarter to half point matters",
                 "benchmarks/reports/camvid-x86-avx2-v7, benchmarks/reports/camvid-x86-avx2"),
}


def _cpu_deploy(host: HostInfo, cpu_file: str) -> tuple[str, str]:
    """The CPU INT8 engine to recommend on a host without a usable GPU, with the measurement behind it."""
    ov_file = artifact("openvino_int8").file
    onnx = (f"{cpu_file} (ONNX Runtime CPU, made for {host.int8_family})",
            "no usable GPU: the CPU INT8 file keeps FP32's mIoU (the export's INT8 check verifies it on this host)")
    if not host.is_x86:
        return onnx[0], onnx[1] + "; OpenVINO is for x86 CPUs"
    have = importlib.util.find_spec("openvino") is not None and importlib.util.find_spec("nncf") is not None
    how = "export --openvino" if have else "pip install 'unet-edge[openvino]', then export --openvino"
    if host.cpu_class in OPENVINO_MEASURED:
        speed, accuracy, report = OPENVINO_MEASURED[host.cpu_class]
        return (f"{ov_file} (OpenVINO + NNCF INT8; {how})",
                f"measured on {host.cpu_class}: {speed:g}x faster than ONNX Runtime's CPU INT8 file by p50; "
                f"{accuracy} ({report}); the export's INT8 check scores it per class")
    speeds = [m[0] for m in OPENVINO_MEASURED.values()]
    return (onnx[0] + f", or {ov_file} ({how})",
            onnx[1] + f"; OpenVINO + NNCF INT8 was {min(speeds):g}-{max(speeds):g}x faster on {', '.join(OPENVINO_MEASURED)} "
            f"but is not measured on {host.cpu_class}: compare both with `unet-edge bench EXPORT_DIR`")
