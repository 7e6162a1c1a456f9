"""TensorRT API use, checked without TensorRT, plus the TensorRT-free parts of unet_edge.trt.

(a) Every TensorRT name the code uses exists in the real bindings of every version it claims.
    The code under ``unet_edge/trt/`` and ``unet_edge/runtime/trt_backend.py`` is parsed (ast); the
    checker collects

    * every attribute chain on the ``tensorrt`` module, always bound to ``trt``
      (``trt.BuilderFlag.FP16`` -> ``BuilderFlag``, ``FP16``);
    * every attribute used on a TensorRT object. Objects are recognised by variable name
      (:data:`TRT_OBJECTS`, the convention documented in ``unet_edge/trt/__init__.py``), also as
      ``self._<name>``; only the first attribute after the object is a TensorRT name;
    * keyword names passed to those calls (``set_timing_cache(..., ignore_mismatch=False)``);
    * the methods a class derived from a ``trt.`` class defines (its overrides);

    and the versions each use applies to: all of ``SUPPORTED_VERSIONS``, narrowed by
    ``@only_trt(<majors>)`` on a function, and by ``if <...>.major >= 11`` /
    ``is_strongly_typed_only(...)`` branches (body vs. else, and "the rest of the block" after an
    ``if`` whose body returns or raises). Each name must be in ``names-<ver>.txt`` of every version
    of its context, and no 11.x context may use what TensorRT 11 removed (:data:`REMOVED_IN_11`,
    from the 10.x-to-11.x migration guide; names like ``INT8`` also exist in 11.x as other enum
    members, so the names list alone cannot catch ``BuilderFlag.INT8``).
(b) trtexec lines only use flags valid for their TensorRT major.
(f) Builds and runtime on a real TensorRT + GPU are skipped here with the reason.
"""
from __future__ import annotations

import ast
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from unet_edge.errors import ArtifactError, BackendUnavailableError, ExportError, UsageError
from unet_edge.metadata import ModelMeta
from unet_edge.trt.builder import BuildOptions, check_onnx_precision, parse_shape, resolve_onnx
from unet_edge.trt.sidecar import check_engine_compat, make_sidecar, read_sidecar, write_sidecar
from unet_edge.trt.trtexec import REMOVED_IN_11, TRTEXEC_FLAGS, flag_name, trtexec_argv, trtexec_commands
from unet_edge.trt.version import SUPPORTED_VERSIONS, TrtVersion, is_strongly_typed_only

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"  # ../shared beside the repository
API_DIR = SHARED / "tensorrt-api"
MODULES = sorted((ROOT / "unet_edge" / "trt").glob("*.py")) + [ROOT / "unet_edge" / "runtime" / "trt_backend.py"]
HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
needs_trt = pytest.mark.skipif(not HAVE_TRT, reason="TensorRT not installed (libnvinfer unavailable on this host)")

#: Variables (or ``self._<name>`` attributes) that hold TensorRT objects in unet_edge/trt/.
TRT_OBJECTS = {"logger", "builder", "network", "parser", "config", "profile", "timing_cache", "net_tensor",
               "parse_error", "plan", "runtime", "engine", "context"}
#: Names that exist in the ``tensorrt`` package but not as strings of its compiled module:
#: ``__version__`` is set by the pure-Python ``tensorrt/__init__.py`` in 10.3.
PYTHON_LEVEL = {"__version__"}
#: Enum member names the linker stored only as the tail of a longer string (so the names lists,
#: which hold whole strings, miss them): name -> (a string ending with it, docstring proving it).
TAIL_MERGED = {"INPUT": ("CONDITIONAL_INPUT", "Tensor is input to the engine."),
               "OUTPUT": ("LOOP_OUTPUT", "Tensor is output to the engine.")}
#: Calibrator methods that are ours, not overrides of IInt8EntropyCalibrator2.
OWN_CALIBRATOR_METHODS = {"free"}
#: Removed (or deprecated-and-ignored) in TensorRT 11 (migration guide "Removed Python APIs";
#: STRONGLY_TYPED: 11.4 docstring "Deprecated in TensorRT 11.0 ... ignored"): (chain prefix).
REMOVED_TRT_11 = [("BuilderFlag", f) for f in ("FP16", "INT8", "BF16", "FP8", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS",
                                             "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO")] + [
    ("IInt8EntropyCalibrator2",), ("IInt8Calibrator",), ("IInt8MinMaxCalibrator",), ("CalibrationAlgoType",),
    ("NetworkDefinitionCreationFlag", "STRONGLY_TYPED")]
REMOVED_OBJ_11 = {"int8_calibrator", "set_calibration_profile", "get_calibration_profile", "platform_has_fast_fp16",
                  "platform_has_fast_int8", "set_quantization_flag", "get_batch_size"}


def _major(version: str) -> int:
    return int(version.split(".")[0])


@dataclass(frozen=True)
class Use:
    kind: str  # "module" (trt.<chain>), "object" (<obj>.<name>), "keyword", "override"
    chain: tuple
    versions: frozenset
    where: str


def _gate(test: ast.expr):
    """A predicate on the TensorRT major for an ``if`` test, or None when the test is not a version gate."""
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        inner = _gate(test.operand)
        return None if inner is None else (lambda m: not inner(m))
    if isinstance(test, ast.Call):
        func = test.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        if name == "is_strongly_typed_only":
            return lambda m: m >= 11
        return None
    if isinstance(test, ast.Attribute) and test.attr == "is_strongly_typed_only":
        return lambda m: m >= 11
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.comparators[0], ast.Constant):
        left = test.left
        is_major = (isinstance(left, ast.Attribute) and left.attr == "major") or (isinstance(left, ast.Name) and left.id in ("major", "trt_major"))
        if not is_major:
            return None
        c = test.comparators[0].value
        ops = {ast.GtE: lambda m: m >= c, ast.Gt: lambda m: m > c, ast.Lt: lambda m: m < c, ast.LtE: lambda m: m <= c,
               ast.Eq: lambda m: m == c, ast.NotEq: lambda m: m != c}
        return ops.get(type(test.ops[0]))
    return None


def _only_trt(fn: ast.FunctionDef):
    for dec in fn.decorator_list:
        if isinstance(dec, ast.Call) and getattr(dec.func, "id", getattr(dec.func, "attr", None)) == "only_trt":
            return {a.value for a in dec.args if isinstance(a, ast.Constant)}
    return None


def _terminates(body: list) -> bool:
    return bool(body) and isinstance(body[-1], (ast.Return, ast.Raise))


class Collector:
    """Walks a module, collecting :class:`Use` records with their version contexts."""

    def __init__(self, filename: str, versions):
        self.filename, self.uses = filename, []
        self.all = frozenset(versions)

    def block(self, stmts, versions):
        for stmt in stmts:
            if isinstance(stmt, ast.If) and (gate := _gate(stmt.test)) is not None:
                yes = frozenset(v for v in versions if gate(_major(v)))
                no = versions - yes
                self.node(stmt.test, versions)
                self.block(stmt.body, yes)
                self.block(stmt.orelse, no)
                if _terminates(stmt.body) and not stmt.orelse:
                    versions = no
                continue
            self.node(stmt, versions)

    def node(self, node, versions):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            majors = _only_trt(node)
            if majors is not None:
                versions = frozenset(v for v in versions if _major(v) in majors)
            for dec in node.decorator_list:
                self.node(dec, versions)
            self.block(node.body, versions)
            return
        if isinstance(node, ast.ClassDef):
            trt_base = any(isinstance(b, ast.Attribute) and isinstance(b.value, ast.Name) and b.value.id == "trt" for b in node.bases)
            for b in node.bases:
                self.node(b, versions)
            for item in node.body:
                if trt_base and isinstance(item, ast.FunctionDef) and not item.name.startswith("_") \
                        and item.name not in OWN_CALIBRATOR_METHODS:
                    self.add("override", (item.name,), versions, item)
            self.block(node.body, versions)
            return
        if isinstance(node, (ast.If, ast.For, ast.While, ast.With, ast.Try)):
            for field in ("test", "iter", "target"):
                if getattr(node, field, None) is not None:
                    self.node(getattr(node, field), versions)
            for item in getattr(node, "items", []):
                self.node(item, versions)
            for field in ("body", "orelse", "finalbody"):
                self.block(getattr(node, field, []), versions)
            for h in getattr(node, "handlers", []):
                self.block(h.body, versions)
            return
        if isinstance(node, ast.Attribute):
            self.attribute(node, versions)
            return
        if isinstance(node, ast.Call):
            self.call(node, versions)
            return
        for child in ast.iter_child_nodes(node):
            self.node(child, versions)

    def _chain(self, node):
        chain, cur = [], node
        while isinstance(cur, ast.Attribute):
            chain.append(cur.attr)
            cur = cur.value
        return cur, tuple(reversed(chain))

    def attribute(self, node, versions):
        root, chain = self._chain(node)
        if isinstance(root, ast.Name) and root.id == "trt":
            self.add("module", chain, versions, node)
        elif isinstance(root, ast.Name) and root.id in TRT_OBJECTS:
            self.add("object", chain[:1], versions, node)
        elif isinstance(root, ast.Name) and root.id == "self" and chain and chain[0].lstrip("_") in TRT_OBJECTS and len(chain) > 1:
            self.add("object", chain[1:2], versions, node)
        elif not isinstance(root, ast.Name):
            self.node(root, versions)

    def call(self, node, versions):
        self.node(node.func, versions)
        if isinstance(node.func, ast.Attribute):
            root, chain = self._chain(node.func)
            is_trt = isinstance(root, ast.Name) and (
                root.id == "trt" or root.id in TRT_OBJECTS
                or (root.id == "self" and chain and chain[0].lstrip("_") in TRT_OBJECTS and len(chain) > 1))
            if is_trt:
                for kw in node.keywords:
                    if kw.arg:
                        self.add("keyword", (kw.arg,), versions, node)
        for arg in list(node.args) + [k.value for k in node.keywords]:
            self.node(arg, versions)

    def add(self, kind, chain, versions, node):
        if chain:
            self.uses.append(Use(kind, chain, frozenset(versions), f"{self.filename}:{node.lineno}"))


def collect(source: str, filename: str = "<src>", versions=SUPPORTED_VERSIONS) -> list[Use]:
    tree = ast.parse(source, filename)
    c = Collector(filename, versions)
    c.block(tree.body, c.all)
    return c.uses


def _load_api():
    names = {v: set((API_DIR / f"names-{v}.txt").read_text().split()) for v in SUPPORTED_VERSIONS}
    docs = {v: (API_DIR / f"docstrings-{v}.txt").read_text(errors="replace") for v in SUPPORTED_VERSIONS}
    return names, docs


def problems(uses: list[Use], names: dict, docs: dict) -> list[str]:
    out = []
    for use in uses:
        for v in sorted(use.versions):
            for name in use.chain:
                if name in names[v] or name in PYTHON_LEVEL:
                    continue
                if name in TAIL_MERGED:
                    longer, doc = TAIL_MERGED[name]
                    if longer in names[v] and doc in docs[v]:
                        continue
                out.append(f"{use.where}: {name!r} ({'.'.join(use.chain)}) is not in TensorRT {v}")
            if _major(v) >= 11:
                if use.kind == "module" and any(use.chain[:len(r)] == r for r in REMOVED_TRT_11):
                    out.append(f"{use.where}: trt.{'.'.join(use.chain)} was removed/deprecated in TensorRT 11 but is used for {v}")
                if use.kind in ("object", "override") and use.chain[0] in REMOVED_OBJ_11:
                    out.append(f"{use.where}: {use.chain[0]} was removed in TensorRT 11 but is used for {v}")
    return out


@pytest.fixture(scope="module")
def api():
    if not API_DIR.is_dir():
        pytest.skip(f"TensorRT API reference not found at {API_DIR}")
    return _load_api()


@pytest.fixture(scope="module")
def project_uses():
    uses = []
    for path in MODULES:
        uses += collect(path.read_text(), str(path.relative_to(ROOT)))
    return uses


# --- (a) names against the bindings ------------------------------------------------------------

def test_reference_data_says_what_we_rely_on(api):
    names, docs = api
    for v in ("10.3", "10.16"):
        assert {"IInt8EntropyCalibrator2", "int8_calibrator", "get_batch_size", "set_calibration_profile"} <= names[v]
    assert not {"IInt8EntropyCalibrator2", "int8_calibrator", "get_batch_size", "set_calibration_profile"} & names["11.4"]
    assert "Strongly typed mode is always enabled" in docs["11.4"]
    for v in SUPPORTED_VERSIONS:
        assert "execute_async_v3" in names[v] and "execute_async_v2" not in names[v] and "num_bindings" not in names[v]


def test_tensorrt_module_is_always_bound_to_trt():
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "tensorrt":
                        assert alias.asname == "trt", f"{path}: import tensorrt as trt"
            if isinstance(node, ast.ImportFrom) and node.module == "tensorrt":
                pytest.fail(f"{path}: use `import tensorrt as trt`, not from-imports")


def test_every_tensorrt_name_exists_in_every_claimed_version(api, project_uses):
    names, docs = api
    bad = problems(project_uses, names, docs)
    assert not bad, "\n".join(bad)


def test_collector_sees_the_api_we_use(project_uses):
    """Guards the checker itself: the calls the code is known to make are found, in the right contexts."""
    everywhere = frozenset(SUPPORTED_VERSIONS)
    ten = frozenset(v for v in SUPPORTED_VERSIONS if _major(v) == 10)
    found = {}
    for use in project_uses:
        found.setdefault(use.chain, set()).add(use.versions)
    for chain in [("num_io_tensors",), ("get_tensor_name",), ("get_tensor_mode",), ("set_input_shape",),
                  ("set_tensor_address",), ("execute_async_v3",), ("deserialize_cuda_engine",),
                  ("build_serialized_network",), ("set_memory_pool_limit",), ("MemoryPoolType", "WORKSPACE"),
                  ("create_optimization_profile",), ("set_shape",), ("add_optimization_profile",),
                  ("create_timing_cache",), ("set_timing_cache",), ("serialize",), ("builder_optimization_level",),
                  ("DLA_core",), ("default_device_type",), ("BuilderFlag", "GPU_FALLBACK"),
                  ("BuilderFlag", "VERSION_COMPATIBLE"), ("OnnxParser",), ("parse_from_file",), ("ignore_mismatch",),
                  ("TensorIOMode", "INPUT"), ("engine_host_code_allowed",), ("get_tensor_profile_shape",)]:
        assert chain in found and everywhere in found[chain], f"{chain} not found for all versions: {found.get(chain)}"
    for chain in [("BuilderFlag", "FP16"), ("BuilderFlag", "INT8"), ("int8_calibrator",), ("set_calibration_profile",),
                  ("IInt8EntropyCalibrator2",), ("get_batch_size",), ("get_batch",), ("read_calibration_cache",),
                  ("write_calibration_cache",), ("NetworkDefinitionCreationFlag", "STRONGLY_TYPED")]:
        assert chain in found and found[chain] == {ten}, f"{chain} must be used only in 10.x contexts: {found.get(chain)}"


def test_checker_catches_misuse(api):
    """The checker reports removed-in-11 API outside a 10.x gate, typos, and respects gates."""
    names, docs = api
    bad_src = (
        "def f(trt, config, engine):\n"
        "    config.set_flag(trt.BuilderFlag.INT8)\n"
        "    config.int8_calibrator = None\n"
        "    engine.get_binding_shape(0)\n"
    )
    msgs = problems(collect(bad_src), names, docs)
    assert any("BuilderFlag.INT8" in m and "11.4" in m for m in msgs)
    assert any("int8_calibrator" in m and "11.4" in m for m in msgs)
    assert any("get_binding_shape" in m for m in msgs)
    gated = (
        "def f(trt, config, version):\n"
        "    if version.major >= 11:\n"
        "        return None\n"
        "    config.set_flag(trt.BuilderFlag.INT8)\n"
        "    config.int8_calibrator = None\n"
        "@only_trt(10)\n"
        "def g(trt, config):\n"
        "    config.set_calibration_profile(None)\n"
        "    class C(trt.IInt8EntropyCalibrator2):\n"
        "        def get_batch_size(self):\n"
        "            return 1\n"
    )
    assert problems(collect(gated), names, docs) == []
    wrong_branch = "def f(trt, config, v):\n    if v.major >= 11:\n        config.int8_calibrator = None\n"
    assert problems(collect(wrong_branch), names, docs)


def test_version_contexts(project_uses):
    """10.x-only API never reaches an 11.x context, and 11.x uses nothing 10.x lacks."""
    table = {}
    for use in project_uses:
        for v in use.versions:
            table.setdefault(v, set()).add(".".join(use.chain))
    assert "IInt8EntropyCalibrator2" in table["10.3"] and "IInt8EntropyCalibrator2" not in table["11.4"]
    assert "int8_calibrator" in table["10.16"] and "int8_calibrator" not in table["11.4"]
    assert table["11.4"] <= table["10.3"] == table["10.16"]


# --- versions and options ---------------------------------------------------------------------

def test_version_parsing():
    assert TrtVersion.parse("10.3.0.30") == TrtVersion(10, 3, 0)
    assert TrtVersion.parse("11.4") == TrtVersion(11, 4, 0)
    assert str(TrtVersion.parse("10.16.1")) == "10.16.1" and TrtVersion.parse("10.16.1").short == "10.16"
    assert TrtVersion.parse("11.0.0").is_strongly_typed_only and not TrtVersion.parse("10.16").is_strongly_typed_only
    assert is_strongly_typed_only(11) and not is_strongly_typed_only(10)
    with pytest.raises(ValueError):
        TrtVersion.parse("latest")


def test_build_options_validation():
    BuildOptions().validate(10).validate(11)
    BuildOptions(precision="int8", mode="implicit").validate(10)
    with pytest.raises(BackendUnavailableError, match="TensorRT 11.x removed implicit"):
        BuildOptions(precision="int8", mode="implicit").validate(11)
    with pytest.raises(BackendUnavailableError, match="DLA"):
        BuildOptions(precision="fp16", mode="explicit", dla_core=0).validate(10)
    BuildOptions(precision="fp16", mode="implicit", dla_core=0).validate(10)
    for bad in (dict(precision="bf16"), dict(mode="weak"), dict(workspace_mib=0), dict(builder_optimization_level=6),
                dict(opt_shape=(1, 3, 8, 8)), dict(min_shape=(2, 3, 8, 8), opt_shape=(1, 3, 8, 8), max_shape=(4, 3, 8, 8))):
        with pytest.raises(ExportError):
            BuildOptions(**bad).validate()
    assert parse_shape("1x3x360x480") == (1, 3, 360, 480)
    with pytest.raises(ExportError):
        parse_shape("1x3x0x4")


def _meta(precision="fp32") -> ModelMeta:
    return ModelMeta(arch={"num_classes": 3, "base_channels": 8, "depth": 3}, class_names=["a", "b", "c"],
                     palette=[[0, 0, 0], [1, 1, 1], [2, 2, 2]], input_size=(64, 96), precision=precision)


def test_resolve_and_precision_checks(tmp_path):
    (tmp_path / "model_fp32.onnx").write_bytes(b"x")
    (tmp_path / "model_int8.onnx").write_bytes(b"x")
    assert resolve_onnx(tmp_path, BuildOptions(precision="int8")) == tmp_path / "model_int8.onnx"
    assert resolve_onnx(tmp_path, BuildOptions(precision="int8", mode="implicit")) == tmp_path / "model_fp32.onnx"
    with pytest.raises(ArtifactError, match="--fp16"):
        resolve_onnx(tmp_path, BuildOptions(precision="fp16"))
    check_onnx_precision(_meta("fp16"), BuildOptions(precision="fp16"), Path("m.onnx"))
    check_onnx_precision(_meta("fp32"), BuildOptions(precision="int8", mode="implicit"), Path("m.onnx"))
    with pytest.raises(ArtifactError, match="model_fp16.onnx"):
        check_onnx_precision(_meta("fp32"), BuildOptions(precision="fp16"), Path("m.onnx"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ArtifactError, match=r"model_int8.onnx not found; create it with: unet-edge export "
                                            r"<checkpoint> --out \S+ --int8 --calib-data <dataset>$"):
        resolve_onnx(empty, BuildOptions(precision="int8"))
    with pytest.raises(ArtifactError, match=r"model_fp32.onnx not found; create it with: unet-edge export "
                                            r"<checkpoint> --out \S+$"):  # implicit INT8 reads the FP32 ONNX
        resolve_onnx(empty, BuildOptions(precision="int8", mode="implicit"))
    for bad in ("1x3x-4x4", "1x3x360"):
        with pytest.raises(ExportError, match=r"^shape must look like NxCxHxW \(positive integers\), e\.g\. 1x3x360x480"):
            parse_shape(bad)


# --- sidecar and compatibility ----------------------------------------------------------------

def _sidecar(version="10.3.0", cc="8.7", name="Orin", **kw) -> dict:
    io = [{"name": "images", "mode": "input", "shape": [1, 3, 64, 96], "dtype": "float32"},
          {"name": "logits", "mode": "output", "shape": [1, 3, 64, 96], "dtype": "float32"}]
    return make_sidecar(_meta(), precision="int8", mode="explicit", trt_version=version,
                        gpu={"name": name, "compute_capability": cc}, io=io, onnx_path="model_int8.onnx",
                        onnx_sha256="0" * 64, strongly_typed=True, build_options=BuildOptions(**kw).to_dict(),
                        build_command="unet-edge build exp --out m.engine --precision int8")


def test_sidecar_round_trip_and_read_meta(tmp_path):
    from unet_edge.artifacts import read_meta

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    write_sidecar(engine, _sidecar())
    side = read_sidecar(engine)
    assert side["engine"]["tensorrt_version"] == "10.3.0" and side["precision"] == "int8"
    from unet_edge.host import probe_host

    assert side["engine"]["build_host"]["cpu_class"] == probe_host().cpu_class
    meta = read_meta(engine)  # the lead's generic reader works on engines through the sidecar
    assert meta.precision == "int8" and meta.class_names == ["a", "b", "c"]
    (tmp_path / "m.engine.json").write_text(json.dumps(_meta().to_dict()))
    with pytest.raises(ArtifactError, match="engine"):
        read_sidecar(engine)
    with pytest.raises(ArtifactError, match="rebuild with"):
        read_sidecar(tmp_path / "other.engine")


def test_check_engine_compat():
    side = _sidecar()
    assert check_engine_compat(side, "10.3.0.30", {"name": "Orin", "compute_capability": "8.7"}) == []
    with pytest.raises(ArtifactError, match="rebuild with: unet-edge build exp"):
        check_engine_compat(side, "10.16.1", {"name": "Orin", "compute_capability": "8.7"})
    with pytest.raises(ArtifactError, match="compute capability 8.7"):
        check_engine_compat(side, "10.3.0", {"name": "NVIDIA H100", "compute_capability": "9.0"})
    warn = check_engine_compat(side, "10.3.0", {"name": "Orin (nvgpu)", "compute_capability": "8.7"})
    assert len(warn) == 1 and "rebuild" in warn[0]
    assert check_engine_compat(side, "10.3.0", {"name": "unknown", "compute_capability": "unknown"}) == []
    vc = _sidecar(version_compatible=True)
    assert check_engine_compat(vc, "10.16.1", {"name": "Orin", "compute_capability": "8.7"}) == []
    with pytest.raises(ArtifactError):
        check_engine_compat(vc, "11.4.0", {"name": "Orin", "compute_capability": "8.7"})
    with pytest.raises(ArtifactError):
        check_engine_compat(vc, "10.2.0", {"name": "Orin", "compute_capability": "8.7"})


# --- (b) trtexec ----------------------------------------------------------------------------

def _all_lines():
    meta = _meta()
    for major in (10, 11):
        for prec in ("fp32", "fp16", "int8"):
            for mode in ("explicit", "implicit"):
                if mode == "implicit" and (major >= 11 or prec == "fp32"):
                    continue
                for dynamic in (False, True):
                    opts = BuildOptions(precision=prec, mode=mode, workspace_mib=512, timing_cache="t.cache",
                                        builder_optimization_level=4, version_compatible=True)
                    line = trtexec_commands("exp", major, prec, opts, meta=meta, dynamic=dynamic)[0]
                    yield major, prec, mode, dynamic, line


def test_trtexec_flags_valid_per_version():
    assert not TRTEXEC_FLAGS[11] & REMOVED_IN_11
    assert "--stronglyTyped" not in TRTEXEC_FLAGS[11]  # always on in 11.x: never emitted
    for major, prec, mode, dynamic, line in _all_lines():
        argv = line.split()
        flags = [flag_name(a) for a in argv[1:]]
        assert argv[0] == "trtexec"
        assert set(flags) <= TRTEXEC_FLAGS[major], (line, set(flags) - TRTEXEC_FLAGS[major])
        assert "--memPoolSize=workspace:512M" in argv and "--skipInference" in argv
        assert "--timingCacheFile=t.cache" in argv and "--builderOptimizationLevel=4" in argv and "--versionCompatible" in argv
        if major == 11:
            assert not set(flags) & REMOVED_IN_11 and "--stronglyTyped" not in flags
        if mode == "explicit":
            assert f"--onnx=exp/model_{prec}.onnx" in argv
            assert ("--stronglyTyped" in flags) == (major == 10)
            assert not {"--fp16", "--int8", "--calib"} & set(flags)
        else:
            assert "--onnx=exp/model_fp32.onnx" in argv and "--stronglyTyped" not in flags
            assert "--fp16" in flags
            assert ("--int8" in flags) == ("--calib=exp/calib.cache" in argv) == (prec == "int8")
        shapes = [a for a in argv if a.startswith(("--minShapes", "--optShapes", "--maxShapes"))]
        assert shapes == ([f"--{k}Shapes=images:1x3x64x96" for k in ("min", "opt", "max")] if dynamic else [])
        assert f"--saveEngine=model_{prec}.engine" in argv


def test_trtexec_refusals_and_dla():
    with pytest.raises(BackendUnavailableError):
        trtexec_commands("exp", 11, "int8", BuildOptions(mode="implicit"))
    with pytest.raises(BackendUnavailableError):
        trtexec_commands("exp", 9, "fp16")
    with pytest.raises(ExportError):
        trtexec_argv("m.onnx", "m.engine", 10, BuildOptions(precision="int8", mode="implicit"), calib_cache=None)
    line = trtexec_commands("exp", 10, "fp16", BuildOptions(mode="implicit", dla_core=0))[0]
    assert "--useDLACore=0" in line and "--allowGPUFallback" in line
    custom = BuildOptions(min_shape=(1, 3, 64, 96), opt_shape=(2, 3, 64, 96), max_shape=(4, 3, 128, 192))
    line = trtexec_commands("exp", 11, "fp16", custom)[0]
    assert "--optShapes=images:2x3x64x96" in line and "--maxShapes=images:4x3x128x192" in line
    assert len(trtexec_commands("exp", 11, ["fp16", "int8"])) == 2


# --- without TensorRT: clear errors ----------------------------------------------------------

@pytest.mark.skipif(HAVE_TRT, reason="checks the error raised where TensorRT is absent")
def test_missing_tensorrt_is_reported(tmp_path):
    from unet_edge.runtime.trt_backend import TensorRTBackend
    from unet_edge.trt.builder import build_engine
    from unet_edge.trt.version import import_tensorrt

    with pytest.raises(BackendUnavailableError, match="TensorRT is not available"):
        import_tensorrt()
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not a plan")
    write_sidecar(engine, _sidecar())
    with pytest.raises(BackendUnavailableError, match="TensorRT"):
        TensorRTBackend(engine)
    with pytest.raises(BackendUnavailableError, match="CUDA GPUs only"):
        TensorRTBackend(engine, device="cpu")
    with pytest.raises(ArtifactError, match="engine not found"):
        TensorRTBackend(tmp_path / "none.engine")
    onnx_path = tmp_path / "model_fp16.onnx"
    onnx_path.write_bytes(b"")  # an empty ModelProto: the metadata comes from the sidecar
    (tmp_path / "model_fp16.onnx.json").write_text(json.dumps(_meta("fp16").to_dict()))
    with pytest.raises(BackendUnavailableError, match="TensorRT is not available"):
        build_engine(onnx_path, tmp_path / "out.engine", BuildOptions(precision="fp16"))
    assert not (tmp_path / "out.engine").exists()


def test_cli_register_adds_build(tmp_path):
    typer = pytest.importorskip("typer")
    from typer.testing import CliRunner

    from unet_edge.trt.cli import register

    app = typer.Typer()
    register(app)

    @app.command()
    def other() -> None:  # a second command keeps `build` a subcommand
        pass

    result = CliRunner().invoke(app, ["build", "--help"], env={"COLUMNS": "250", "NO_COLOR": "1"})
    assert result.exit_code == 0
    for opt in ("--out", "--precision", "--mode", "--workspace-mib", "--min-shape", "--opt-shape", "--max-shape",
                "--timing-cache", "--opt-level", "--dla-core", "--version-compatible", "--calib-data", "--jetson"):
        assert opt in result.output
    result = CliRunner().invoke(app, ["build", str(tmp_path)])
    assert isinstance(result.exception, UsageError)  # nothing to do: a usage mistake, mapped by handle_errors


# --- (f) real TensorRT + GPU ------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from unet_edge.export.fp16 import export_fp16
    from unet_edge.export.int8 import export_int8
    from unet_edge.export.onnx_export import export_onnx
    from unet_edge.model import UNet, config_from_preset

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("export")
    cfg = config_from_preset("tiny", 3)
    meta = _meta().with_(arch=cfg.to_dict())
    fp32 = export_onnx(UNet(cfg).eval(), meta, d / "model_fp32.onnx")
    export_fp16(fp32, meta, d / "model_fp16.onnx")
    export_int8(fp32, meta, d / "model_int8.onnx", SHARED / "datasets" / "camvid" / "train", calib_images=4,
                cache_path=d / "calib.cache")
    return d


@needs_trt
@pytest.mark.parametrize("precision,mode", [("fp32", "explicit"), ("fp16", "explicit"), ("int8", "explicit"),
                                            ("fp16", "implicit"), ("int8", "implicit")])
def test_build_and_run_engine_matches_onnxruntime(tiny_export, tmp_path, precision, mode):
    ort = pytest.importorskip("onnxruntime")
    from unet_edge.runtime.trt_backend import TensorRTBackend
    from unet_edge.trt.builder import build_engine
    from unet_edge.trt.version import import_tensorrt, installed_version

    if mode == "implicit" and installed_version(import_tensorrt()).major >= 11:
        pytest.skip("TensorRT 11 has no implicit precision")
    engine = build_engine(tiny_export, tmp_path / f"m_{precision}.engine",
                          BuildOptions(precision=precision, mode=mode, timing_cache=str(tmp_path / "t.cache")))
    side = read_sidecar(engine)
    assert side["engine"]["precision"] == precision and (tmp_path / "t.cache").is_file()
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 96)).astype(np.float32)
    ref = ort.InferenceSession(str(tiny_export / "model_fp32.onnx")).run(None, {"images": x[:1]})[0]
    with TensorRTBackend(engine) as backend:
        out = backend.infer(x)
        assert out.shape == (2, 3, 64, 96) and out.dtype == np.float32
        agree = (out[:1].argmax(1) == ref.argmax(1)).mean()
        assert agree > (0.99 if precision != "int8" else 0.9)
    backend.close()  # idempotent
    with pytest.raises(ArtifactError, match="closed"):
        backend.infer(x)
