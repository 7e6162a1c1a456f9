"""torch.export and AOTInductor artifacts (``.pt2``), the successor of TorchScript.

Two files from one checkpoint:

* ``model_exported.pt2``: a :class:`torch.export.ExportedProgram` (``torch.export.save``), the
  ATen graph plus weights, with the model metadata as the extra file ``extra/unet_edge.pt2.json``.
  Python runs it (``torch.export.load(f).module()``); it is the portable, inspectable form.
* ``model_aoti_cpu.pt2``: an AOTInductor package (``torch._inductor.aoti_compile_and_package``), the
  graph compiled ahead of time to a C++ shared library with the weights inside, metadata in the
  package metadata (``aot_inductor.metadata``, readable in ``data/aotinductor/<model>/*_metadata.json``).
  Making it needs a C++ compiler; loading it does not. It is built for the CPU it is compiled on
  (``-march=native`` and that CPU's vector ISA) unless ``march`` names a portable x86-64 level.

Shapes: the U-Net pads H and W internally to a multiple ``m = 2**depth``; which branch of that pad
the graph takes is fixed at export, so one graph serves the sizes with the input size's remainders:
H = m*k + (H0 % m), W = m*j + (W0 % m) for ``meta.input_size`` (H0, W0), k, j >= 2 (a root of 1
is specialised away by ``torch.export``), up to :data:`MAX_SIDE` pixels, and any batch from 1 to
:data:`MAX_BATCH`. :func:`shape_rule` describes it; the backends check inputs against it
(:class:`unet_edge.runtime.base.Capabilities`).

Trust: ``torch.export.load`` can run code from a file in torch 2.13 (``sympy.sympify`` of its shape
strings, ``exec`` of its guards); the backend validates an archive with
:func:`unet_edge.pt2_archive.check_exported_archive` first (details there). An AOTInductor package
is a native shared library: loading it runs its code, like running a program. Load only packages you
built or whose SHA-256 you checked against the export report.

Reading an archive without torch (its kind, metadata, accepted shapes, host check) lives in
:mod:`unet_edge.pt2_archive`, shared with the backends and :mod:`unet_edge.artifacts`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..errors import BackendUnavailableError, ExportError, UsageError
from ..io_utils import atomic_path
from ..metadata import METADATA_KEY, ModelMeta
from ..provenance import source_record
from ..pt2_archive import AOTI_NAMES, EXPORTED_NAME, MARCH_FLAGS, MAX_BATCH, MAX_SIDE, PT2_EXTRA, shape_rule

if TYPE_CHECKING:
    import torch

#: vector width (bits) inductor's kernels use for each portable ``march``
_MARCH_SIMDLEN = {"x86-64-v3": 256, "x86-64-v4": 512}

_COMPILER_HELP = ("install one (Debian/Ubuntu: apt-get install g++; Fedora/RHEL: dnf install gcc-c++; "
                  "macOS: xcode-select --install) or point CXX at one (CXX=clang++), then export again; "
                  f"the ExportedProgram ({EXPORTED_NAME}) needs no compiler")


# ---------------------------------------------------------------- shapes

def dynamic_shapes(meta: ModelMeta, max_side: int = MAX_SIDE, max_batch: int = MAX_BATCH) -> tuple[dict]:
    """``dynamic_shapes`` for ``torch.export.export(model, (x,))`` expressing :func:`shape_rule`:
    ``Dim("batch")`` and H, W as ``Dim * 2**depth + remainder``."""
    from torch.export import Dim

    rule = shape_rule(meta, max_side, max_batch)
    dims: dict = {0: Dim("batch", min=1, max=max_batch)}
    for axis, key in ((2, "height"), (3, "width")):
        r = rule[key]
        root = Dim(f"{key}_blocks", min=2, max=(r["max"] - r["offset"]) // r["multiple"])
        dims[axis] = root * r["multiple"] + r["offset"] if r["offset"] else root * r["multiple"]
    return (dims,)


# ---------------------------------------------------------------- export

def export_program(model: "torch.nn.Module", meta: ModelMeta, device: str = "cpu", max_side: int = MAX_SIDE,
                   max_batch: int = MAX_BATCH) -> "torch.export.ExportedProgram":
    """``torch.export.export`` of ``model`` (eval mode) with dynamic batch, H and W (:func:`shape_rule`).

    The example input is a (2, 3, H0, W0) float32 zero batch on ``device`` (batch 2: a batch of 1
    would be specialised to 1).

    Raises:
        ExportError: torch.export cannot capture the model (message: torch's first line).
    """
    import torch

    model = model.eval().to(device)
    example = (torch.zeros(2, 3, *meta.input_size, device=device),)
    try:
        with torch.no_grad():
            return torch.export.export(model, example, dynamic_shapes=dynamic_shapes(meta, max_side, max_batch))
    except UsageError:
        raise
    except Exception as e:  # torch raises many types (UserError, ConstraintViolationError, ...)
        raise ExportError(f"torch.export could not capture the model: {_first_line(e)}") from e


def _pt2_meta(meta: ModelMeta, kind: str, device: str, rule: dict, **more) -> ModelMeta:
    import torch

    return meta.with_(precision="fp32", extra={"pt2": {"kind": kind, "device": device, "torch": str(torch.__version__),
                                                      "shapes": rule, **more}})


def save_exported_program(ep: "torch.export.ExportedProgram", meta: ModelMeta, path: str | Path,
                          rule: dict | None = None) -> Path:
    """Write ``ep`` with ``torch.export.save`` atomically, ``meta`` (``precision fp32``,
    ``extra.pt2``: kind, device, torch version, accepted shapes) as extra file :data:`PT2_EXTRA`.
    Returns the path.

    Raises:
        ExportError: torch cannot serialize the program.
    """
    import torch

    rule = rule or shape_rule(meta)
    device = str(next(iter(ep.state_dict.values())).device.type) if ep.state_dict else "cpu"
    text = _pt2_meta(meta, "exported_program", device, rule).to_json()
    original = ep.example_inputs
    if original is not None and len(original[0]) == 1 and isinstance(original[0][0], torch.Tensor):
        # the example batch is stored in the file (4 MB at 2x3x360x480); the smallest accepted one does as well
        ep.example_inputs = ((torch.zeros(1, 3, rule["height"]["min"], rule["width"]["min"],
                                          device=original[0][0].device),), {})
    try:
        with atomic_path(path) as tmp:
            try:
                torch.export.save(ep, str(tmp), extra_files={PT2_EXTRA: text})
            except Exception as e:
                raise ExportError(f"torch.export.save failed for {path}: {_first_line(e)}") from e
    finally:
        ep.example_inputs = original
    return Path(path)


def check_aoti_toolchain() -> str:
    """The C++ compiler AOTInductor will use (``$CXX`` or ``g++``, as inductor searches), checked by running it.

    Raises:
        BackendUnavailableError: none found; the message says how to install one.
    """
    try:
        from torch._inductor import cpp_builder, exc
    except ImportError as e:  # a torch build without inductor
        raise BackendUnavailableError(f"this PyTorch has no AOTInductor ({e}); install torch>=2.6") from e
    try:
        return cpp_builder.get_cpp_compiler()
    except exc.InvalidCxxCompiler as e:
        raise BackendUnavailableError(f"AOTInductor needs a C++ compiler to build the .pt2 package and none was "
                                      f"found ($CXX or g++); {_COMPILER_HELP}") from e


def compile_aoti(ep: "torch.export.ExportedProgram", meta: ModelMeta, path: str | Path, device: str = "cpu",
                 march: str = "native", freezing: bool = True, rule: dict | None = None) -> Path:
    """Compile ``ep`` with AOTInductor into a package at ``path`` (atomic), ``meta`` in the package
    metadata under ``unet_edge`` (``extra.pt2`` as for :func:`save_exported_program` plus
    ``march``, ``cpu_isa``, ``freezing``, ``build_cpu_flags``, ``build_cpu_class``, ``compiler``).
    Returns the path. Compiling the CamVid ``edge`` model took 40-90 s on 2 busy cores.

    Args:
        ep: exported on ``device`` (:func:`export_program`).
        device: ``cpu`` or ``cuda``.
        march: CPU only: ``native`` (this CPU: fastest, runs only on CPUs with all of its ISA
            flags) or a portable level from :data:`MARCH_FLAGS` (``x86-64-v3``: any AVX2/FMA CPU).
        freezing: inductor ``freezing`` (weights as constants: folded BatchNorm, oneDNN-packed
            convolution weights on CPU).

    Raises:
        BackendUnavailableError: no C++ compiler (:func:`check_aoti_toolchain`); CUDA asked for
        and absent. UsageError: unknown ``device`` or ``march``. ExportError: compilation failed.
    """
    import torch

    from ..host import probe_host

    if device not in AOTI_NAMES:
        raise UsageError(f"AOTInductor device {device!r}: use cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError("an AOTInductor CUDA package needs a CUDA GPU and a CUDA build of PyTorch; "
                                      "build it on a GPU host or use the CPU package")
    if march != "native" and march not in MARCH_FLAGS:
        raise UsageError(f"unknown march {march!r}; use native or one of {', '.join(MARCH_FLAGS)}")
    compiler = check_aoti_toolchain()
    configs: dict = {"freezing": bool(freezing)}
    if device == "cpu" and march != "native":
        configs.update({"cpp.march": march, "cpp.simdlen": _MARCH_SIMDLEN[march]})
    isa = _vec_isa(configs.get("cpp.simdlen")) if device == "cpu" else ""
    host = probe_host()
    extra = {"march": march if device == "cpu" else None, "cpu_isa": isa, "freezing": bool(freezing),
             "build_cpu_flags": sorted(host.flags), "build_cpu_class": host.cpu_class, "compiler": compiler}
    text = _pt2_meta(meta, "aoti", device, rule or shape_rule(meta), **extra).to_json()
    configs["aot_inductor.metadata"] = {METADATA_KEY: text}
    with atomic_path(path) as tmp:
        try:
            with torch.no_grad():
                torch._inductor.aoti_compile_and_package(ep, package_path=str(tmp), inductor_configs=configs)
        except Exception as e:
            from torch._inductor import exc

            if isinstance(e, exc.InvalidCxxCompiler):
                raise BackendUnavailableError(f"AOTInductor found no working C++ compiler; {_COMPILER_HELP}") from e
            raise ExportError(f"AOTInductor compilation of {path} failed ({compiler}): {_first_line(e)}") from e
    return Path(path)


def _vec_isa(simdlen: int | None) -> str:
    """The vector ISA inductor picks on this host (as ``AOTI_CPU_ISA`` spells it) for ``simdlen``."""
    from torch._inductor import config
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    with config.patch({"cpp.simdlen": simdlen}):
        return str(pick_vec_isa()).upper()


def parity(reference: "torch.nn.Module", candidate: Callable, meta: ModelMeta, batch: int = 2, seed: int = 0,
           size: tuple[int, int] | None = None) -> dict:
    """Compare ``candidate`` with the eager ``reference`` on a seeded N(0, 1) float32 batch (batch,
    3, H, W), H, W = ``size`` or ``meta.input_size``: :func:`unet_edge.export.onnx_export.parity`'s
    ``max_abs_error``, ``mean_abs_error``, ``argmax_agreement`` (fraction of pixels with the same
    class), plus ``batch``, ``input_size`` and ``seed``.

    ``candidate`` takes and returns torch tensors on CPU.
    """
    import torch

    from .onnx_export import parity as logit_parity

    hw = tuple(size or meta.input_size)
    x = torch.randn(batch, 3, *hw, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref = reference.eval().cpu()(x).numpy()
        out = candidate(x).detach().cpu().float().numpy()
    return {**logit_parity(ref, out), "batch": batch, "input_size": list(hw), "seed": seed}


def export_pt2(checkpoint: str | Path, out_dir: str | Path, aoti: bool = True, device: str = "cpu",
               march: str = "native", log: Callable[[str], None] = print) -> dict:
    """Export a checkpoint to :data:`EXPORTED_NAME` and (``aoti``) the AOTInductor package
    :data:`AOTI_NAMES` ``[device]`` in ``out_dir``, each checked against the checkpoint.

    Returns:
        ``{"exported_program": {"path", "parity_vs_pytorch", "export_s"}, "aoti_<device>": {"path",
        "parity_vs_pytorch", "compile_s", "march"}, "shapes": shape_rule}``; parity at the input
        size, batch 2, seed 0, plus (ExportedProgram) at a second accepted size. Both files record
        the checkpoint (:func:`unet_edge.provenance.source_record`) in their metadata.

    Raises:
        ArtifactError: bad checkpoint. ExportError: capture or compilation failed.
        BackendUnavailableError: no C++ compiler for the package (the ExportedProgram is written
        first and stays).
    """
    import torch

    from ..artifacts import model_from_checkpoint
    from ..runtime.pt2_backend import load_aoti_package, load_exported_program

    source = source_record(checkpoint)
    model, meta, _ = model_from_checkpoint(checkpoint)
    meta = meta.with_(extra=source)
    out = Path(out_dir)
    rule = shape_rule(meta)
    report: dict = {"shapes": rule}
    t0 = time.perf_counter()
    ep = export_program(model, meta)
    path = save_exported_program(ep, meta, out / EXPORTED_NAME, rule)
    export_s = time.perf_counter() - t0
    module = load_exported_program(path)
    other = tuple(r["min"] + r["multiple"] for r in (rule["height"], rule["width"]))
    report["exported_program"] = {"path": str(path), "export_s": round(export_s, 2),
                                  "parity_vs_pytorch": parity(model, module, meta),
                                  "parity_other_size": parity(model, module, meta, batch=3, size=other)}
    log(f"  exported_program {path.name}: {export_s:.1f} s, max|dlogit| "
        f"{report['exported_program']['parity_vs_pytorch']['max_abs_error']:.2e}")
    if aoti:
        if device != "cpu":
            ep = export_program(model, meta, device=device)
        t0 = time.perf_counter()
        pkg = compile_aoti(ep, meta, out / AOTI_NAMES[device], device=device, march=march, rule=rule)
        compile_s = time.perf_counter() - t0
        runner = load_aoti_package(pkg)
        dev = torch.device(device)
        report[f"aoti_{device}"] = {"path": str(pkg), "compile_s": round(compile_s, 1), "march": march,
                                    "parity_vs_pytorch": parity(model, lambda x: runner(x.to(dev)), meta)}
        log(f"  aoti_{device} {pkg.name}: compiled in {compile_s:.0f} s, max|dlogit| "
            f"{report[f'aoti_{device}']['parity_vs_pytorch']['max_abs_error']:.2e}")
    return report


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}".rstrip(": ")
