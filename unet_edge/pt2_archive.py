"""Reading ``.pt2`` archives (torch.export ExportedProgram, AOTInductor package) without PyTorch.

What both the export (:mod:`unet_edge.export.pt2`) and the backends
(:mod:`unet_edge.runtime.pt2_backend`) need, and what :mod:`unet_edge.artifacts` uses to recognise
a ``.pt2`` and read its metadata: the kind of an archive from its zip directory
(:func:`pt2_kind`), the unet-edge metadata inside it (:func:`read_pt2_meta`), an AOTInductor
package's own metadata (:func:`aoti_package_metadata`) and whether this host can run it
(:func:`host_can_run_aoti`), the accepted input shapes (:func:`shape_rule`, :func:`stored_shape_rule`),
and the validation of an ExportedProgram before ``torch.export.load`` sees it
(:func:`check_exported_archive`).

Data and model layer: the standard library and the core only. Nothing here imports torch except
:func:`check_exported_archive`, which loads the archive's sample inputs with
``torch.load(weights_only=True)`` (its callers load the file with torch next).

Trust: ``torch.export.load`` is not safe on files from others in torch 2.13. It evaluates symbolic
shape strings with ``sympy.sympify`` (Python ``eval``) while loading, ``.module()`` ``exec``'s the
file's ``guards_code`` at the first call, node targets resolve to any ``torch.*`` attribute, and
pickled payloads load with ``weights_only=False``. :func:`check_exported_archive` validates all of
these against what an export of this code writes (symbolic strings and guards parsed and checked
node by node, ATen/prims operators only, no pickled weights or custom objects, sample inputs
loadable with ``weights_only=True``) before anything of the file reaches torch; it is a hardening
of a format not designed for untrusted input, not a sandbox. An AOTInductor package is a native
shared library: loading it runs its code, like running a program.
"""
from __future__ import annotations

import ast
import io
import json
import platform
import re
import sys
import zipfile
from pathlib import Path

from .errors import ArtifactError, BackendUnavailableError, UsageError
from .formats import artifact
from .metadata import METADATA_KEY, ModelMeta

#: file names in an export folder (the ``pt2_exported`` and ``pt2_aoti_cpu`` rows of
#: :data:`unet_edge.formats.ARTIFACTS`; a CUDA package is no export row: it is made on a GPU host)
EXPORTED_NAME = artifact("pt2_exported").file
AOTI_NAMES = {"cpu": artifact("pt2_aoti_cpu").file, "cuda": "model_aoti_cuda.pt2"}
#: extra file holding the metadata in an ExportedProgram archive (``<root>/extra/<name>``); not
#: ``unet_edge.json``, which marks TorchScript files (``artifacts.TORCHSCRIPT_EXTRA``)
PT2_EXTRA = f"{METADATA_KEY}.pt2.json"
#: largest H or W and batch the exported graphs accept
MAX_SIDE = 4096
MAX_BATCH = 64
#: ``march`` values for the AOTInductor CPU package and the CPU flags a host needs to run one
#: (besides those of the vector ISA the kernels use); ``native``: every flag of the build host
MARCH_FLAGS = {"x86-64-v3": ("avx2", "fma", "f16c"), "x86-64-v4": ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl")}
#: /proc/cpuinfo flags each of inductor's vector ISA names (``AOTI_CPU_ISA``) needs
_ISA_FLAGS = {"AVX2": ("avx2", "fma"), "AVX512": ("avx512f", "avx512bw", "avx512vl", "fma"),
              "AVX512_VNNI": ("avx512_vnni",), "AMX_TILE": ("amx_tile", "amx_bf16", "amx_int8"),
              "ASIMD": ("asimd",), "NEON": ("asimd",), "SVE": ("sve",), "SVE256": ("sve",)}


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


def stored_shape_rule(meta: ModelMeta, path: str | Path = "") -> dict:
    """The accepted shapes stored at export (``meta.extra["pt2"]["shapes"]``, as :func:`shape_rule`
    writes them), else derived from ``meta`` with :func:`shape_rule`.

    Raises:
        ArtifactError: stored shapes that are not such a dict (names ``path``).
    """
    info = meta.extra.get("pt2")
    rule = info.get("shapes") if isinstance(info, dict) else None
    if rule is None:
        return shape_rule(meta)

    def ints(*vs) -> bool:
        return all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in vs)

    try:
        ok = (ints(*rule["batch"]) and len(rule["batch"]) == 2 and 1 <= rule["batch"][0] <= rule["batch"][1]
              and all(ints(r["multiple"], r["offset"], r["min"], r["max"]) and r["multiple"] >= 1
                      and r["min"] <= r["max"] for r in (rule["height"], rule["width"])))
    except (KeyError, TypeError):
        ok = False
    if not ok:
        raise ArtifactError(f"{path}: metadata extra.pt2.shapes is not a valid shape rule ({str(rule)[:120]}); re-export it")
    return rule


def rule_accepts(rule: dict, size: tuple[int, int]) -> bool:
    """True when (H, W) ``size`` is one a :func:`shape_rule` serves (min <= v <= max and
    v % multiple == offset on both axes)."""
    return all(r["min"] <= int(v) <= r["max"] and int(v) % r["multiple"] == r["offset"]
               for r, v in zip((rule["height"], rule["width"]), size))


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
                import torch  # only here: the rest of the check reads the zip and JSON alone

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
    from .host import probe_host

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
