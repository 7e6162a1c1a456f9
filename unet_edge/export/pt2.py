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

Trust: ``torch.export.load`` is not safe on files from others in torch 2.13. It evaluates symbolic
shape strings with ``sympy.sympify`` (Python ``eval``) while loading, ``.module()`` ``exec``'s the
file's ``guards_code`` at the first call, node targets resolve to any ``torch.*`` attribute, and
pickled payloads load with ``weights_only=False``. :func:`check_exported_archive` validates all of
these against what an export of this code writes (symbolic strings and guards parsed and checked
node by node, ATen/prims operators only, no pickled weights or custom objects, sample inputs
loadable with ``weights_only=True``) before anything of the file reaches torch; it is a hardening
of a format not designed for untrusted input, not a sandbox. An AOTInductor package is a native
shared library: loading it runs its code, like running a program. Load only packages you built or
whose SHA-256 you checked against the export report.
"""
from __future__ import annotations

import ast
import io
import json
import platform
import re
import sys
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..errors import ArtifactError, BackendUnavailableError, ExportError, UsageError
from ..io_utils import atomic_path
from ..metadata import METADATA_KEY, ModelMeta

if TYPE_CHECKING:
    import torch

#: file names in an export folder
EXPORTED_NAME = "model_exported.pt2"
AOTI_NAMES = {"cpu": "model_aoti_cpu.pt2", "cuda": "model_aoti_cuda.pt2"}
#: extra file holding the metadata in an ExportedProgram archive (``<root>/extra/<name>``); not
#: ``unet_edge.json``, which marks TorchScript files (``artifacts.TORCHSCRIPT_EXTRA``)
PT2_EXTRA = f"{METADATA_KEY}.pt2.json"
#: largest H or W and batch the exported graphs accept
MAX_SIDE = 4096
MAX_BATCH = 64
#: ``march`` values for the AOTInductor CPU package and the CPU flags a host needs to run one
#: (besides those of the vector ISA the kernels use); ``native``: every flag of the build host
MARCH_FLAGS = {"x86-64-v3": ("avx2", "fma", "f16c"), "x86-64-v4": ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl")}
#: vector width (bits) inductor's kernels use for each portable ``march``
_MARCH_SIMDLEN = {"x86-64-v3": 256, "x86-64-v4": 512}
#: /proc/cpuinfo flags each of inductor's vector ISA names (``AOTI_CPU_ISA``) needs
_ISA_FLAGS = {"AVX2": ("avx2", "fma"), "AVX512": ("avx512f", "avx512bw", "avx512vl", "fma"),
              "AVX512_VNNI": ("avx512_vnni",), "AMX_TILE": ("amx_tile", "amx_bf16", "amx_int8"),
              "ASIMD": ("asimd",), "NEON": ("asimd",), "SVE": ("sve",), "SVE256": ("sve",)}

_COMPILER_HELP = ("install one (Debian/Ubuntu: apt-get install g++; Fedora/RHEL: dnf install gcc-c++; "
                  "macOS: xcode-select --install) or point CXX at one (CXX=clang++), then export again; "
                  "the ExportedProgram (model_exported.pt2) needs no compiler")


# ---------------------------------------------------------------- archive inspection (no torch)

def _archive_names(path: Path) -> tuple[str, list[str]] | None:
    """(root folder, entry names) of a PT2 archive, None when ``path`` is not one (no torch needed).

    Raises:
        ArtifactError: a zip that cannot be read.
    """
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            if not names:
                return None
            root = names[0].split("/")[0]
            fmt = f"{root}/archive_format"
            if fmt not in names or z.read(fmt).strip() != b"pt2":
                return None
    except (zipfile.BadZipFile, OSError, KeyError) as e:
        raise ArtifactError(f"cannot read {path} as a zip archive ({type(e).__name__}: {e}); it may be truncated") from e
    return root, names


def pt2_kind(path: str | Path) -> str | None:
    """``exported_program`` or ``aoti`` for a PT2 archive (``archive_format`` ``pt2``), else None.

    Reads only the zip directory; runs nothing from the file; needs no torch.

    Raises:
        ArtifactError: an unreadable zip, or an archive holding both an ExportedProgram and an
        AOTInductor model (unet-edge never writes one).
    """
    found = _archive_names(Path(path))
    if found is None:
        return None
    root, names = found
    programs = any(n.startswith(f"{root}/models/") and n.endswith(".json") for n in names)
    aoti = any(n.startswith(f"{root}/data/aotinductor/") for n in names)
    if programs and aoti:
        raise ArtifactError(f"{path} holds both an ExportedProgram and an AOTInductor model; unet-edge writes "
                            f"them as two files ({EXPORTED_NAME}, {AOTI_NAMES['cpu']}); re-export it")
    if programs:
        return "exported_program"
    if aoti:
        return "aoti"
    raise ArtifactError(f"{path} is a PT2 archive with neither an ExportedProgram nor an AOTInductor model; re-export it")


def aoti_package_metadata(path: str | Path) -> dict[str, str]:
    """The package metadata of an AOTInductor ``.pt2`` (``AOTI_DEVICE_KEY``, ``AOTI_CPU_ISA``,
    ``AOTI_MACHINE``, ``AOTI_PLATFORM`` and unet-edge's ``unet_edge`` JSON), read from the archive
    without loading its library.

    Raises:
        ArtifactError: not an AOTInductor package, or its metadata is missing or not JSON.
    """
    path = Path(path)
    if pt2_kind(path) != "aoti":
        raise ArtifactError(f"{path} is not an AOTInductor package")
    root, names = _archive_names(path)
    files = sorted(n for n in names if n.startswith(f"{root}/data/aotinductor/") and n.endswith("_metadata.json"))
    if not files:
        raise ArtifactError(f"{path}: AOTInductor package without a *_metadata.json; re-export it")
    try:
        with zipfile.ZipFile(path) as z:
            meta = json.loads(z.read(files[0]))
    except (zipfile.BadZipFile, OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"cannot read the package metadata of {path} ({type(e).__name__}: {e}); re-export it") from e
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ArtifactError(f"{path}: AOTInductor package metadata is not a map of strings; re-export it")
    return meta


def read_pt2_meta(path: str | Path) -> ModelMeta:
    """The :class:`ModelMeta` inside a ``.pt2`` (ExportedProgram extra file, or AOTInductor package
    metadata), validated; reads the archive only (no torch, nothing from the file runs).

    Raises:
        ArtifactError: not a PT2 archive, no unet-edge metadata in it, or invalid metadata.
    """
    path = Path(path)
    kind = pt2_kind(path)
    if kind is None:
        raise ArtifactError(f"{path} is not a PT2 archive")
    if kind == "aoti":
        text = aoti_package_metadata(path).get(METADATA_KEY)
        if text is None:
            raise ArtifactError(f"{path} is an AOTInductor package without unet-edge metadata; export it with "
                                "`unet-edge export --pt2`")
        return ModelMeta.from_json(text, source=path)
    root, names = _archive_names(path)
    name = f"{root}/extra/{PT2_EXTRA}"
    if name not in names:
        raise ArtifactError(f"{path} is an ExportedProgram without unet-edge metadata ({name}); export it with "
                            "`unet-edge export --pt2`")
    try:
        with zipfile.ZipFile(path) as z:
            text = z.read(name)
    except (zipfile.BadZipFile, OSError) as e:
        raise ArtifactError(f"cannot read the metadata of {path} ({type(e).__name__}: {e}); it may be truncated") from e
    return ModelMeta.from_json(text, source=path)


# ---------------------------------------------------------------- shapes

def shape_rule(meta: ModelMeta, max_side: int = MAX_SIDE, max_batch: int = MAX_BATCH) -> dict:
    """The input shapes an exported graph of ``meta`` accepts (see the module docstring).

    Returns:
        ``{"batch": [1, max_batch], "height": {"multiple": m, "offset": r, "min": .., "max": ..},
        "width": {...}}``; H = multiple * k + offset, min <= H <= max (pixels).

    Raises:
        UsageError: ``max_side`` too small for two blocks of ``2**depth`` or ``max_batch`` < 1.
    """
    if max_batch < 1:
        raise UsageError(f"max batch {max_batch} must be >= 1")
    m = 2 ** int(meta.arch.get("depth", 4))
    rule: dict = {"batch": [1, int(max_batch)]}
    for key, size in zip(("height", "width"), meta.input_size):
        r = int(size) % m
        top = (int(max_side) - r) // m
        if top < 2 or size > max_side:
            raise UsageError(f"max side {max_side} px is below the input {key} {size} or two blocks of {m} px")
        rule[key] = {"multiple": m, "offset": r, "min": 2 * m + r, "max": top * m + r}
    return rule


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
        size, batch 2, seed 0, plus (ExportedProgram) at a second accepted size.

    Raises:
        ArtifactError: bad checkpoint. ExportError: capture or compilation failed.
        BackendUnavailableError: no C++ compiler for the package (the ExportedProgram is written
        first and stays).
    """
    import torch

    from ..artifacts import model_from_checkpoint
    from ..runtime.pt2_backend import load_aoti_package, load_exported_program

    model, meta, _ = model_from_checkpoint(checkpoint)
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


# ---------------------------------------------------------------- untrusted ExportedProgram archives

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOTTED = re.compile(r"([A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*)?")
_SYMBOL = re.compile(r"[a-z]+[0-9]+")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?(e-?[0-9]+)?")
_NAME_KEYS = {"name", "arg_name", "forward_arg_names", "user_input_name", "user_output_name"}
_FQN_KEYS = {"parameter_name", "buffer_name", "tensor_constant_name", "fqn", "target_name"}
#: sympy constructors torch's serializer writes in ``expr_str`` (srepr form)
_SYMPY_CALLS = {"Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Mod", "PythonMod", "FloorDiv",
                "CleanDiv", "CeilDiv", "IntTrueDiv", "FloatTrueDiv", "TruncToInt", "RoundToInt", "ToFloat",
                "PowByNatural", "FloatPow", "Max", "Min", "Abs", "floor", "ceiling", "Eq", "Ne", "Lt", "Le", "Gt",
                "Ge", "StrictLessThan", "StrictGreaterThan", "LessThan", "GreaterThan", "Equality", "Unequality",
                "And", "Or", "Not"}
_SYMPY_NAMES = {"oo", "zoo", "nan", "true", "false", "S"}
_SYMPY_KWARGS = {"positive", "negative", "integer", "real", "nonnegative", "nonpositive", "finite", "zero",
                 "precision", "evaluate"}
_OPERATOR_TARGETS = {f"_operator.{n}" for n in ("getitem", "add", "sub", "mul", "floordiv", "truediv", "mod", "pow",
                                                 "neg", "pos", "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_",
                                                 "not_", "abs")}
_OTHER_TARGETS = {f"torch.{n}" for n in ("sym_max", "sym_min", "sym_not", "sym_float", "sym_int", "sym_ite",
                                         "sym_sqrt", "sym_sum", "_sym_sqrt")} | {
                  f"math.{n}" for n in ("floor", "ceil", "trunc", "sqrt")}
_GUARD_NODES = (ast.Expression, ast.Compare, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Call, ast.Attribute,
                ast.Subscript, ast.Name, ast.Constant, ast.Load, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)
_GUARD_CALLS = {"max", "min", "abs", "int", "float"}
_GUARD_ATTRS = {"size", "stride", "storage_offset", "dim", "numel"}
_MATH_ATTRS = {"floor", "ceil", "trunc", "sqrt", "isnan", "inf"}


def _bad(path, what: str) -> ArtifactError:
    return ArtifactError(f"{path} is not an ExportedProgram as unet-edge writes them ({what}); refusing to load it: "
                         "torch.export.load can run code from such a file; re-export it from a trusted checkpoint")


def _check_sym_expr(text: str, path) -> None:
    """``text`` must be an srepr of sympy constructors over shape symbols (what ``sympify`` may evaluate)."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise _bad(path, f"symbolic expression {text[:80]!r} does not parse") from None

    def ok(node, symbol_arg: bool = False) -> bool:
        if isinstance(node, ast.Expression):
            return ok(node.body)
        if isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id in _SYMPY_CALLS):
                return False
            is_symbol = node.func.id == "Symbol"
            return (all(ok(a, is_symbol and i == 0) for i, a in enumerate(node.args))
                    and all(k.arg in _SYMPY_KWARGS and isinstance(k.value, ast.Constant)
                            and isinstance(k.value.value, (bool, int)) for k in node.keywords))
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, str):
                return bool(_SYMBOL.fullmatch(v)) if symbol_arg else bool(_NUMBER.fullmatch(v))
            return isinstance(v, (int, float, bool))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return isinstance(node.operand, ast.Constant) and ok(node.operand)
        return isinstance(node, ast.Name) and node.id in _SYMPY_NAMES

    if not ok(tree):
        raise _bad(path, f"unexpected symbolic expression {text[:120]!r}")


def _check_range_key(text: str, path) -> None:
    """A range-constraint key: arithmetic over shape symbols and integers, e.g. ``16*s39 + 8``."""
    rest = _NUMBER.sub(" ", _SYMBOL.sub(" ", text))
    if not text or set(rest) - set(" +-*/%()"):
        raise _bad(path, f"unexpected range constraint {text[:80]!r}")


def _check_guard(text: str, path) -> None:
    """A guard: a comparison over ``L['name'].size()[i]``, integers and max/min (what ``.module()`` execs)."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise _bad(path, f"guard {text[:80]!r} does not parse") from None
    for node in ast.walk(tree):
        if not isinstance(node, _GUARD_NODES):
            raise _bad(path, f"guard {text[:80]!r} has a {type(node).__name__}")
        if isinstance(node, ast.Name) and node.id not in {"L", "math"} | _GUARD_CALLS:
            raise _bad(path, f"guard {text[:80]!r} names {node.id!r}")
        if isinstance(node, ast.Attribute) and not (
                node.attr in _GUARD_ATTRS or (isinstance(node.value, ast.Name) and node.value.id == "math"
                                              and node.attr in _MATH_ATTRS)):
            raise _bad(path, f"guard {text[:80]!r} reads .{node.attr}")
        if isinstance(node, ast.Call) and not (
                (isinstance(node.func, ast.Name) and node.func.id in _GUARD_CALLS) or isinstance(node.func, ast.Attribute)):
            raise _bad(path, f"guard {text[:80]!r} calls something other than size()/max/min")
        if isinstance(node, ast.Constant) and not (
                isinstance(node.value, (int, float, bool)) or (isinstance(node.value, str) and _IDENT.fullmatch(node.value))):
            raise _bad(path, f"guard {text[:80]!r} has the constant {node.value!r}")


def _check_target(target: str, path) -> None:
    parts = target.split(".")
    if target.startswith(("torch.ops.aten.", "torch.ops.prims.")) and len(parts) in (4, 5) and all(
            _IDENT.fullmatch(p) for p in parts):
        return
    if target in _OPERATOR_TARGETS or target in _OTHER_TARGETS:
        return
    raise _bad(path, f"operator {target[:80]!r} is not an ATen/prims operator")


def _check_program_json(doc, path) -> None:
    def walk(node, key=None):
        if isinstance(node, dict):
            for k, v in node.items():
                if not isinstance(k, str) or "\r" in k or "\x00" in k:
                    raise _bad(path, f"key {str(k)[:40]!r}")
                if k == "custom_obj_values" and v:
                    raise _bad(path, "custom objects")
                if k in ("as_custom_obj", "as_graph", "as_operator"):
                    raise _bad(path, f"a {k} argument")
                if k == "guards_code":
                    if not isinstance(v, list) or not all(isinstance(g, str) for g in v):
                        raise _bad(path, "guards_code is not a list of strings")
                    for g in v:
                        _check_guard(g, path)
                    continue
                if k == "range_constraints" and isinstance(v, dict):
                    for rk in v:
                        _check_range_key(rk, path)
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, str):
            if "\r" in node or "\x00" in node:
                raise _bad(path, f"a string with a carriage return or NUL under {key!r}")
            if key == "expr_str":
                _check_sym_expr(node, path)
            elif key in _NAME_KEYS and not _IDENT.fullmatch(node):
                raise _bad(path, f"name {node[:60]!r}")
            elif key in _FQN_KEYS and not _DOTTED.fullmatch(node):
                raise _bad(path, f"attribute path {node[:60]!r}")
            elif key == "target":
                _check_target(node, path)

    walk(doc)


def check_exported_archive(path: str | Path) -> None:
    """Validate an ExportedProgram ``.pt2`` before ``torch.export.load`` sees it (module docstring: Trust).

    Checks: one archive root, ``archive_format`` ``pt2``, exactly one program ``models/model.json``;
    no legacy pickled weights/constants, every weight and constant stored raw (``use_pickle``
    false), no custom objects; sample inputs load with ``torch.load(weights_only=True)`` (so torch
    never falls back to ``weights_only=False``); in the program JSON, every symbolic expression is
    an srepr of sympy constructors over shape symbols, every guard a comparison over input sizes,
    every operator ATen/prims (or ``operator``/``torch.sym_*``/``math`` on sizes), every name an
    identifier and attribute path dotted identifiers, no string with a carriage return or NUL.

    Raises:
        ArtifactError: any check fails (the message says which), or the archive cannot be read.
    """
    import torch

    path = Path(path)
    found = _archive_names(path)
    if found is None:
        raise ArtifactError(f"{path} is not a PT2 archive")
    root, names = found
    if any(not n.startswith(f"{root}/") for n in names):
        raise _bad(path, "entries outside the archive root")
    models = [n for n in names if n.startswith(f"{root}/models/")]
    if models != [f"{root}/models/model.json"]:
        raise _bad(path, f"programs {[n[len(root) + 1:] for n in models]}, expected models/model.json")
    for legacy in ("data/weights/model.pt", "data/constants/model.pt"):
        if f"{root}/{legacy}" in names:
            raise _bad(path, f"legacy pickled {legacy}")
    if any(n.startswith(f"{root}/data/constants/") and ("custom_obj" in n or "opaque_obj" in n) for n in names):
        raise _bad(path, "custom objects")
    try:
        with zipfile.ZipFile(path) as z:
            for cfg in (f"{root}/data/weights/model_weights_config.json", f"{root}/data/constants/model_constants_config.json"):
                if cfg not in names:
                    raise _bad(path, f"no {cfg[len(root) + 1:]}")
                entries = json.loads(z.read(cfg)).get("config", {})
                if not isinstance(entries, dict) or any(not isinstance(e, dict) or e.get("use_pickle") is not False
                                                        for e in entries.values()):
                    raise _bad(path, f"pickled payloads in {cfg[len(root) + 1:]}")
            sample = f"{root}/data/sample_inputs/model.pt"
            if sample in names:
                try:
                    torch.load(io.BytesIO(z.read(sample)), weights_only=True)
                except Exception as e:
                    raise _bad(path, f"sample inputs that need more than weights_only loading ({type(e).__name__})") from e
            doc = json.loads(z.read(f"{root}/models/model.json"))
    except ArtifactError:
        raise
    except (zipfile.BadZipFile, OSError, KeyError, json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise ArtifactError(f"cannot read {path} ({type(e).__name__}: {e}); it may be truncated; re-export it") from e
    _check_program_json(doc, path)


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def host_can_run_aoti(pkg_meta: dict[str, str], meta: ModelMeta, path: str | Path = "") -> None:
    """Raise unless this host can run the AOTInductor CPU package with package metadata
    ``pkg_meta`` (:func:`aoti_package_metadata`) and unet-edge metadata ``meta``.

    Checks machine and platform, then the CPU flags: every flag of the package's vector ISA
    (``AOTI_CPU_ISA``), of its portable ``march``, or, for ``march`` ``native``, every ISA flag of
    the CPU it was built on (``-march=native`` code may use any of them; running it on a CPU
    without one dies with SIGILL).

    Raises:
        BackendUnavailableError: a mismatch; the message names it and says to rebuild the package
        on this host or with a portable ``march``.
    """
    from ..host import probe_host

    host = probe_host()
    machine, plat = pkg_meta.get("AOTI_MACHINE", ""), pkg_meta.get("AOTI_PLATFORM", "")
    fix = "rebuild it on this host (`unet-edge export --pt2`) or build a portable one (--pt2-march x86-64-v3)"
    if machine and machine.lower() != platform.machine().lower():
        raise BackendUnavailableError(f"{path} was compiled for {machine}; this host is {platform.machine()}; {fix}")
    if plat and plat != sys.platform:
        raise BackendUnavailableError(f"{path} was compiled for {plat}; this host runs {sys.platform}; {fix}")
    need: set[str] = set()
    for token in pkg_meta.get("AOTI_CPU_ISA", "").split():
        if token not in _ISA_FLAGS:
            raise BackendUnavailableError(f"{path} uses the vector ISA {token}, which unet-edge cannot check on this "
                                          f"host; {fix}")
        need.update(_ISA_FLAGS[token])
    info = meta.extra.get("pt2", {}) if isinstance(meta.extra.get("pt2"), dict) else {}
    march = info.get("march") or "native"
    if march in MARCH_FLAGS:
        need.update(MARCH_FLAGS[march])
    else:
        need.update(f for f in info.get("build_cpu_flags", []) if isinstance(f, str))
    missing = sorted(need - set(host.flags))
    if missing:
        built = info.get("build_cpu_class", "another CPU")
        raise BackendUnavailableError(f"{path} was compiled for {built} (march {march}) and needs the CPU flags "
                                      f"{', '.join(missing)}, which this {host.cpu_class} CPU lacks; {fix}")
