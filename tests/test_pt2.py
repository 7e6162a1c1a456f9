"""torch.export ExportedProgram and AOTInductor (.pt2) artifacts: parity with the checkpoint, metadata
inside the file, dynamic shapes, the toolchain and host checks, and refusing archives that would run code."""
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from unet_edge import pt2_archive
from unet_edge.artifacts import artifact_kind, model_from_checkpoint, read_meta
from unet_edge.errors import ArtifactError, BackendUnavailableError, DataError, UsageError
from unet_edge.export import pt2
from unet_edge.host import HostInfo
from unet_edge.io_utils import sha256
from unet_edge.metadata import ModelMeta
from unet_edge.provenance import NAME_KEY, SHA_KEY, source_record
from unet_edge.runtime.loader import load_backend
from unet_edge.runtime.pt2_backend import AotiBackend, ExportedProgramBackend, spatial_ranges


def _has_compiler() -> bool:
    try:
        pt2.check_aoti_toolchain()
        return True
    except BackendUnavailableError:
        return False


HAS_COMPILER = _has_compiler()
needs_compiler = pytest.mark.skipif(not HAS_COMPILER, reason="AOTInductor needs a C++ compiler ($CXX or g++); none found")


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("pt2")
    report = pt2.export_pt2(tiny_run["best"], out, aoti=False, log=lambda *a: None)
    return {"path": out / pt2.EXPORTED_NAME, "report": report}


def _eager(tiny_run, x: np.ndarray) -> np.ndarray:
    return _eager_ckpt(tiny_run["best"], x)


def _eager_ckpt(path: Path, x: np.ndarray) -> np.ndarray:
    model, _, _ = model_from_checkpoint(path)
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _batch(n, h, w, seed=1):
    return np.random.default_rng(seed).standard_normal((n, 3, h, w)).astype(np.float32)


def test_exported_program_matches_eager_and_carries_the_metadata(exported, tiny_run):
    path = exported["path"]
    _, ckpt_meta, _ = model_from_checkpoint(tiny_run["best"])
    assert pt2_archive.pt2_kind(path) == "exported_program"
    meta = pt2_archive.read_pt2_meta(path)
    info = meta.extra.pop("pt2")
    source = {k: meta.extra.pop(k) for k in (NAME_KEY, SHA_KEY)}
    assert source == source_record(tiny_run["best"])
    assert meta.to_dict() == ckpt_meta.with_(precision="fp32").to_dict()
    assert info["kind"] == "exported_program" and info["device"] == "cpu" and info["torch"] == torch.__version__
    # tiny: depth 3 (blocks of 8), trained at 48x64
    assert info["shapes"] == {"batch": [1, 64], "height": {"multiple": 8, "offset": 0, "min": 16, "max": 4096},
                              "width": {"multiple": 8, "offset": 0, "min": 16, "max": 4096}}
    x = _batch(2, *meta.input_size)
    with ExportedProgramBackend(path, threads=1) as b:
        assert (b.label, b.threads) == ("torch.export fp32 (cpu)", 1)
        out = b.infer(x)
    assert out.shape == (2, 3, 48, 64) and out.dtype == np.float32
    assert np.abs(out - _eager(tiny_run, x)).max() < 1e-4
    parity = exported["report"]["exported_program"]["parity_vs_pytorch"]
    assert parity["max_abs_error"] < 1e-4 and parity["argmax_agreement"] == 1.0
    assert (parity["batch"], parity["input_size"], parity["seed"]) == (2, [48, 64], 0)


def test_exported_program_serves_other_sizes_and_batches_and_names_the_rule(exported, tiny_run):
    with ExportedProgramBackend(exported["path"], threads=1) as b:
        for n, h, w in ((3, 32, 40), (1, 16, 96)):
            x = _batch(n, h, w)
            out = b.infer(x)
            assert out.shape == (n, 3, h, w)
            assert np.abs(out - _eager(tiny_run, x)).max() < 1e-4
        with pytest.raises(DataError, match=r"input height 44 is not served: it must be 8\*k \+ 0 between 16 and 4096"):
            b.infer(_batch(1, 44, 64))
        with pytest.raises(UsageError, match=r"batch 65 is outside \[1, 64\]"):
            b.infer(np.zeros((65, 3, 16, 16), np.float32))
    other = exported["report"]["exported_program"]["parity_other_size"]
    assert other["input_size"] == [24, 24] and other["batch"] == 3 and other["max_abs_error"] < 1e-4


def test_invalid_stored_shape_rule_is_an_artifact_error(exported):
    meta = pt2_archive.read_pt2_meta(exported["path"])
    bad = meta.with_(extra={"pt2": {**meta.extra["pt2"], "shapes": {"batch": [1, "64"], "height": {}, "width": {}}}})
    with pytest.raises(ArtifactError, match="extra.pt2.shapes is not a valid shape rule"):
        ExportedProgramBackend(exported["path"], meta=bad)


def test_shape_rule_for_a_size_that_is_not_a_multiple():
    meta = ModelMeta(arch={"num_classes": 11, "depth": 4}, class_names=[f"c{i}" for i in range(11)],
                     palette=[[i, i, i] for i in range(11)], input_size=(360, 480))
    rule = pt2_archive.shape_rule(meta)
    assert rule == {"batch": [1, 64], "height": {"multiple": 16, "offset": 8, "min": 40, "max": 4088},
                    "width": {"multiple": 16, "offset": 0, "min": 32, "max": 4096}}
    h, w = spatial_ranges(rule)
    assert [v for v in range(0, 120) if h.accepts(v)] == [40, 56, 72, 88, 104]
    assert [v for v in range(0, 100) if w.accepts(v)] == [32, 48, 64, 80, 96]
    assert h.accepts(360) and w.accepts(480) and not h.accepts(352) and not h.accepts(4104)
    assert h.describe() == "16*k + 8 between 40 and 4088"


def _mutated(src: Path, dst: Path, change) -> Path:
    """Copy of the archive ``src`` with ``change(name, bytes) -> bytes`` applied to every entry."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, change(info.filename, zin.read(info.filename)))
    return dst


def _edit_program(fn):
    def change(name, data):
        if name.endswith("models/model.json"):
            doc = json.loads(data)
            fn(doc)
            return json.dumps(doc).encode()
        return data
    return change


def _first_expr(doc, text):
    def walk(o):
        if isinstance(o, dict):
            for k, v in o.items():
                if k == "expr_str":
                    o[k] = text
                    return True
                if walk(v):
                    return True
        elif isinstance(o, list):
            return any(walk(v) for v in o)
        return False
    assert walk(doc)


def _pickled_weight(name, data):
    if name.endswith("model_weights_config.json"):
        doc = json.loads(data)
        next(iter(doc["config"].values()))["use_pickle"] = True
        return json.dumps(doc).encode()
    return data


@pytest.mark.parametrize("what, change, message", [
    ("guard", _edit_program(lambda d: d["guards_code"].append("__import__('pathlib').Path(CANARY).touch() is None")),
     "guard"),
    ("sympy", _edit_program(lambda d: _first_expr(d, "__import__('pathlib').Path(CANARY).touch()")),
     "symbolic expression"),
    ("operator", _edit_program(lambda d: d["graph_module"]["graph"]["nodes"][0].update(target="torch.hub.load")),
     "operator 'torch.hub.load'"),
    ("name", _edit_program(lambda d: d["graph_module"]["graph"]["inputs"][0]["as_tensor"].update(name="x=print(1)")),
     "name 'x=print\\(1\\)'"),
    ("pickle", _pickled_weight, "pickled payloads"),
])
def test_refuses_exported_programs_that_would_run_code(exported, tmp_path, what, change, message):
    canary = tmp_path / "ran"

    def with_canary(name, data):
        return change(name, data).replace(b"CANARY", repr(str(canary)).encode()) if name.endswith(".json") else change(name, data)

    bad = _mutated(exported["path"], tmp_path / f"{what}.pt2", with_canary)
    assert pt2_archive.read_pt2_meta(bad).num_classes == 3  # metadata stays readable: only running is refused
    with pytest.raises(ArtifactError, match=message):
        ExportedProgramBackend(bad)
    assert not canary.exists()
    pt2_archive.check_exported_archive(exported["path"])  # the unmodified export passes the same check


def test_pt2_kind_and_missing_metadata(exported, tiny_run, tmp_path):
    assert pt2_archive.pt2_kind(tiny_run["best"]) is None  # a torch.save zip is not a PT2 archive
    bare = tmp_path / "bare.pt2"
    ep = torch.export.export(torch.nn.ReLU(), (torch.zeros(2),))
    torch.export.save(ep, str(bare))
    assert pt2_archive.pt2_kind(bare) == "exported_program"
    with pytest.raises(ArtifactError, match="without unet-edge metadata"):
        pt2_archive.read_pt2_meta(bare)


def test_missing_compiler_is_a_clear_backend_error(exported, tiny_run, tmp_path):
    from torch._inductor import config

    _, meta, _ = model_from_checkpoint(tiny_run["best"])
    ep = torch.export.load(str(exported["path"]))
    with config.patch({"cpp.cxx": ("unet-edge-no-such-compiler",)}):
        with pytest.raises(BackendUnavailableError, match=r"needs a C\+\+ compiler .*apt-get install g\+\+"):
            pt2.check_aoti_toolchain()
        with pytest.raises(BackendUnavailableError, match="model_exported.pt2\\) needs no compiler"):
            pt2.compile_aoti(ep, meta, tmp_path / "x.pt2")
    assert not (tmp_path / "x.pt2").exists()
    if HAS_COMPILER:
        assert pt2.check_aoti_toolchain()  # the patch is gone: the real compiler is found again


def _host(flags, arch="x86_64"):
    return HostInfo(cpu_model="test", arch=arch, cores_physical=2, cores_logical=2, affinity=2, flags=frozenset(flags))


@pytest.fixture
def avx2_host(monkeypatch):
    import unet_edge.host as host

    monkeypatch.setattr(host, "probe_host", lambda: _host({"avx2", "fma", "f16c"}))
    monkeypatch.setattr(pt2_archive.platform, "machine", lambda: "x86_64")


def _meta(**pt2_extra):
    return ModelMeta(arch={"num_classes": 2}, class_names=["a", "b"], palette=[[0, 0, 0], [1, 1, 1]],
                     extra={"pt2": pt2_extra})


def test_aoti_host_check(avx2_host):
    amx = {"AOTI_MACHINE": "x86_64", "AOTI_PLATFORM": "linux", "AOTI_CPU_ISA": "AVX512 AVX512_VNNI AMX_TILE"}
    with pytest.raises(BackendUnavailableError,
                       match="compiled for x86-amx \\(march native\\) and needs the CPU flags amx_bf16, amx_int8, "
                             "amx_tile, avx512_vnni, avx512bw, avx512f, avx512vl, which this x86-avx2 CPU lacks"):
        pt2_archive.host_can_run_aoti(amx, _meta(march="native", build_cpu_class="x86-amx", build_cpu_flags=["avx2"]), "m.pt2")
    portable = {**amx, "AOTI_CPU_ISA": "AVX2"}
    pt2_archive.host_can_run_aoti(portable, _meta(march="x86-64-v3"), "m.pt2")
    with pytest.raises(BackendUnavailableError, match="needs the CPU flags avx512_fp16"):  # -march=native on a newer CPU
        pt2_archive.host_can_run_aoti(portable, _meta(march="native", build_cpu_flags=["avx2", "fma", "avx512_fp16"]), "m.pt2")
    with pytest.raises(BackendUnavailableError, match="compiled for aarch64"):
        pt2_archive.host_can_run_aoti({**portable, "AOTI_MACHINE": "aarch64"}, _meta(march="x86-64-v3"), "m.pt2")
    with pytest.raises(BackendUnavailableError, match="vector ISA AVX10"):
        pt2_archive.host_can_run_aoti({**portable, "AOTI_CPU_ISA": "AVX10"}, _meta(march="x86-64-v3"), "m.pt2")


# --- the export pipeline (`unet-edge export --pt2`), the loader and bench ---------------------------

def _invoke(*args):
    from typer.testing import CliRunner

    from cli import app

    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def shallow_ckpt(tiny_run, tmp_path_factory) -> Path:
    """The tiny checkpoint (its metadata, classes, input size) with a depth-1 U-Net of seeded fresh
    weights: AOTInductor generates and compiles C++ per layer, and this graph has 3 conv blocks where
    depth 3 has 7."""
    from unet_edge.artifacts import load_checkpoint
    from unet_edge.model import UNet, UNetConfig

    ckpt = load_checkpoint(tiny_run["best"])
    ckpt["meta"]["arch"] = {**ckpt["meta"]["arch"], "depth": 1}
    torch.manual_seed(0)
    ckpt["model"] = UNet(UNetConfig.from_dict(ckpt["meta"]["arch"])).state_dict()
    path = tmp_path_factory.mktemp("shallow") / "best.pt"
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def pt2_export(shallow_ckpt, tmp_path_factory):
    """``cli.py export --pt2`` on :func:`shallow_ckpt`: the one AOTInductor compile of this module."""
    if not HAS_COMPILER:
        pytest.skip("AOTInductor needs a C++ compiler ($CXX or g++); none found")
    # inductor's C++ compile: the slowest fixture of the suite (tens of seconds on 2 idle cores)
    out = tmp_path_factory.mktemp("pt2_cli") / "exp"
    r = _invoke("export", shallow_ckpt, "--out", out, "--pt2", "--threads", "1", "--json")
    assert r.exit_code == 0, r.output
    return {"out": out, "report": json.loads(r.stdout)}


@pytest.mark.slow
def test_cli_export_pt2_writes_the_table_files_with_provenance(pt2_export, shallow_ckpt):
    from unet_edge.formats import EXPORT_REPORT, artifact, export_files
    from unet_edge.provenance import check_consistent

    out, report = pt2_export["out"], pt2_export["report"]
    assert {p.name for p in out.iterdir()} == {*export_files(options=("--pt2",)), "model_fp32.onnx.json", EXPORT_REPORT}
    want = sha256(shallow_ckpt)
    for key, kind, label in (("pt2_exported", "exported_program", "torch.export fp32 (cpu)"),
                             ("pt2_aoti_cpu", "aoti", "aotinductor fp32 (cpu)")):
        path = out / artifact(key).file
        entry = report["artifacts"][key]
        assert Path(entry["path"]) == path and entry["sha256"] == sha256(path) and entry["backend"] == label
        assert artifact_kind(path) == kind
        meta = read_meta(path)
        assert (meta.precision, meta.extra[SHA_KEY], meta.extra["pt2"]["kind"]) == ("fp32", want, kind)
        p = entry["parity_vs_pytorch"]
        assert p["max_abs_error"] < 1e-4 and p["argmax_agreement"] == 1.0
    assert report["artifacts"]["pt2_exported"]["parity_other_size"]["input_size"] == [6, 6]  # depth 1: min 4 + 2
    assert report["artifacts"]["pt2_exported"]["parity_other_size"]["max_abs_error"] < 1e-4
    assert report["artifacts"]["pt2_exported"]["shapes"]["batch"] == [1, 64]
    aoti = report["artifacts"]["pt2_aoti_cpu"]
    assert aoti["march"] == "native" and isinstance(aoti["compile_s"], float) and aoti["compile_s"] > 0
    files = [out / n for n in export_files(models_only=True, options=("--pt2",))]
    assert check_consistent(files) == want  # every file, the .pt2 ones included, records the checkpoint


@pytest.mark.slow
def test_aoti_package_matches_eager_and_checks_device(pt2_export, shallow_ckpt, monkeypatch):
    path = pt2_export["out"] / pt2.AOTI_NAMES["cpu"]
    assert pt2_archive.pt2_kind(path) == "aoti"
    info = pt2_archive.read_pt2_meta(path).extra["pt2"]
    assert (info["kind"], info["device"], info["march"], info["freezing"]) == ("aoti", "cpu", "native", True)
    assert pt2_archive.aoti_package_metadata(path)["AOTI_DEVICE_KEY"] == "cpu"
    with load_backend(path, device="cpu", threads=1) as b:
        assert isinstance(b, AotiBackend) and b.label == "aotinductor fp32 (cpu)" and b.threads == 1
        for n, h, w in ((2, 48, 64), (3, 32, 40)):
            x = _batch(n, h, w)
            assert np.abs(b.infer(x) - _eager_ckpt(shallow_ckpt, x)).max() < 1e-4
    with pytest.raises(BackendUnavailableError, match="AOTInductor cpu package; it cannot run on cuda"):
        AotiBackend(path, device="cuda")
    with pytest.raises(BackendUnavailableError, match="fp32 artifact; --precision bf16"):
        load_backend(path, precision="bf16")
    import unet_edge.host as host

    monkeypatch.setattr(host, "probe_host", lambda: _host({"avx2", "fma"}))
    if set(info["build_cpu_flags"]) - {"avx2", "fma"}:
        with pytest.raises(BackendUnavailableError, match="which this x86-avx2 CPU lacks"):
            AotiBackend(path)


@pytest.mark.slow
def test_bench_plans_the_pt2_rows(pt2_export, monkeypatch):
    from benchmarks.plan import plan_rows

    out = pt2_export["out"]
    rows = {r.id: r for r in plan_rows([str(out)], device="cpu").rows}
    for rid, name in (("torch.export/fp32/cpu", "model_exported.pt2"), ("aotinductor/fp32/cpu", "model_aoti_cpu.pt2")):
        assert rows[rid].status == "planned" and Path(rows[rid].path).name == name, rows[rid]
    assert [r.backend for r in rows.values()][:5] == ["pytorch", "pytorch", "torchscript", "torch.export", "aotinductor"]
    assert rows["aotinductor/fp32/cpu"].label == "AOTInductor FP32 (cpu)"
    other = {r.id: r for r in plan_rows([str(out)], device="cpu", input_size=(45, 64)).rows}
    assert other["torch.export/fp32/cpu"].status == "skipped"
    assert other["torch.export/fp32/cpu"].reason == ("benchmark input 45x64 is not served: exported for H = 2*k + 0 in "
                                                     "[4, 4096], W = 2*k + 0 in [4, 4096]")
    import unet_edge.host as host

    monkeypatch.setattr(host, "probe_host", lambda: _host({"avx2", "fma"}))
    info = pt2_archive.read_pt2_meta(out / pt2.AOTI_NAMES["cpu"]).extra["pt2"]
    if set(info["build_cpu_flags"]) - {"avx2", "fma"}:  # a package for this CPU is skipped on a lesser one
        row = {r.id: r for r in plan_rows([str(out)], device="cpu", host=_host({"avx2", "fma"})).rows}["aotinductor/fp32/cpu"]
        assert row.status == "skipped" and "which this x86-avx2 CPU lacks" in row.reason


def test_loader_and_bench_on_the_exported_program(exported, tiny_run):
    from benchmarks.plan import plan_rows

    path = exported["path"]
    assert artifact_kind(path) == "exported_program"
    assert read_meta(path).to_dict() == pt2_archive.read_pt2_meta(path).to_dict()
    with load_backend(path, device="cpu", threads=1) as b:
        assert isinstance(b, ExportedProgramBackend) and b.label == "torch.export fp32 (cpu)"
        x = _batch(1, 48, 64)
        assert np.abs(b.infer(x) - _eager(tiny_run, x)).max() < 1e-4
    with pytest.raises(BackendUnavailableError, match="--precision fp16"):
        load_backend(path, precision="fp16")
    rows = {r.id: r for r in plan_rows([str(path)], device="cpu").rows}
    assert rows["torch.export/fp32/cpu"].status == "planned" and rows["torch.export/fp32/cpu"].path == str(path)
    # the checkpoint for the PyTorch rows is found through the provenance record in the .pt2
    assert rows["pytorch/fp32/cpu"].status == "planned" and rows["pytorch/fp32/cpu"].path == str(tiny_run["best"].resolve())
    assert rows["aotinductor/fp32/cpu"].status == "skipped"
    assert rows["aotinductor/fp32/cpu"].reason == "no AOTInductor package given (unet-edge export --pt2 writes model_aoti_cpu.pt2)"


def test_pt2_is_recognised_and_its_metadata_read_without_torch(exported, tmp_path):
    """A runtime-only install (no PyTorch) still tells a .pt2 apart and reads its metadata."""
    import os
    import subprocess
    import sys

    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'torch' or name.startswith('torch.'):\n"
            "            raise ImportError('blocked')\n"
            "sys.meta_path.insert(0, Block())\n"
            "from unet_edge.artifacts import artifact_kind, read_meta\n"
            "from unet_edge.runtime.loader import load_backend\n"
            "from unet_edge.errors import BackendUnavailableError\n"
            "p = sys.argv[1]\n"
            "print(artifact_kind(p), read_meta(p).num_classes)\n"
            "try:\n"
            "    load_backend(p)\n"
            "except BackendUnavailableError as e:\n"
            "    print(e)\n")
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", code, str(exported["path"])], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(root)})
    assert r.returncode == 0, r.stderr
    first, second = r.stdout.splitlines()[:2]
    assert first == "exported_program 3"
    assert "is a PyTorch ExportedProgram (.pt2): running it needs PyTorch" in second
