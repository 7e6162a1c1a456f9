"""The artifact table of unet_edge.formats: unique, true to the TensorRT bindings, the names every
stage writes and reads (export, build, trtexec, Jetson bundle, bench), and defaults defined once."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from unet_edge import formats
from unet_edge.formats import (ARTIFACTS, BACKENDS, DEFAULT_CALIB_IMAGES, DEFAULT_WORKSPACE_MIB, EXPORT_REPORT,
                               PRODUCERS, TRT_PRECISIONS, artifact, artifact_table_markdown, build_source, by_file,
                               engine_file, export_files, onnx_file, parse_dims)
from unet_edge.trt.version import SUPPORTED_MAJORS

ROOT = Path(__file__).resolve().parents[1]
TRT_API = ROOT.parent / "shared" / "tensorrt-api"  # ../shared beside the repository
#: export options of the conftest ``tiny_export`` (its opt-in rows are written; --openvino/--pt2 ones are not)
TINY_EXPORT_OPTIONS = ("--fp16", "--int8")


def test_keys_and_file_names_are_unique_and_fields_valid():
    keys, files = [a.key for a in ARTIFACTS], [a.file for a in ARTIFACTS]
    assert len(set(keys)) == len(keys) == len(ARTIFACTS)
    assert len(set(files)) == len(files) and EXPORT_REPORT not in files
    for a in ARTIFACTS:
        assert artifact(a.key) is a and by_file(a.file) is a
        assert a.producer in PRODUCERS and a.backends and set(a.backends) <= set(BACKENDS), a.key
        assert a.precision in (*TRT_PRECISIONS, None) and set(a.trt_majors) <= set(SUPPORTED_MAJORS), a.key
        assert a.description and "\n" not in a.description and "|" not in a.description, a.key
    assert by_file("best.pt") is None
    with pytest.raises(KeyError, match="no artifact 'onnx_bf16'"):
        artifact("onnx_bf16")


def test_export_rows_in_order():
    assert export_files() == ("model.ts", "model_fp32.onnx", "model_fp16.onnx", "model_int8.onnx",
                              "model_int8_cpu.onnx", "calib.cache", "model_openvino_fp32.xml", "model_openvino_int8.xml",
                              "model_exported.pt2", "model_aoti_cpu.pt2")
    assert export_files(models_only=True) == tuple(n for n in export_files() if n != "calib.cache")
    assert export_files(options=()) == ("model.ts", "model_fp32.onnx")
    assert export_files(options=("--pt2",)) == ("model.ts", "model_fp32.onnx", "model_exported.pt2", "model_aoti_cpu.pt2")
    assert export_files(models_only=True, options=("--int8",)) == ("model.ts", "model_fp32.onnx", "model_int8.onnx",
                                                                   "model_int8_cpu.onnx")
    assert [onnx_file(p) for p in TRT_PRECISIONS] == ["model_fp32.onnx", "model_fp16.onnx", "model_int8.onnx"]
    assert [engine_file(p) for p in TRT_PRECISIONS] == ["model_fp32.engine", "model_fp16.engine", "model_int8.engine"]


def test_tensorrt_facts():
    """Implicit precision (builder flags, calibration cache) is 10.x only; Q/DQ and FP16 ONNX build on both."""
    assert artifact("calib_cache").trt_majors == (10,)
    assert artifact("onnx_int8").trt_majors == artifact("onnx_fp16").trt_majors == (10, 11)
    assert artifact("onnx_int8_cpu").trt_majors == () and artifact("torchscript").trt_majors == ()
    assert [a.key for a in ARTIFACTS if a.needs_calibration] == ["onnx_int8", "onnx_int8_cpu", "calib_cache",
                                                                   "engine_int8", "openvino_int8"]
    for p in TRT_PRECISIONS:
        assert build_source(p, "explicit") is artifact(f"onnx_{p}")
        assert build_source(p, "implicit") is artifact("onnx_fp32")
    with pytest.raises(KeyError):
        build_source("fp16", "weak")


def test_calibration_cache_row_matches_the_bindings():
    """The cache is read by IInt8EntropyCalibrator2 / int8_calibrator: in every 10.x, gone from 11.x."""
    lists = {v: TRT_API / f"names-{v}.txt" for v in ("10.3", "10.16", "11.4")}
    if not all(p.is_file() for p in lists.values()):
        pytest.skip(f"TensorRT name lists not found in {TRT_API}")
    names = {v: set(p.read_text().split()) for v, p in lists.items()}
    for v, found in names.items():
        has = {"IInt8EntropyCalibrator2", "int8_calibrator"} <= found
        assert has == (int(v.split(".")[0]) in artifact("calib_cache").trt_majors), v


def test_parse_dims():
    assert parse_dims("1x3x360x480", 4) == (1, 3, 360, 480) and parse_dims(" 360X480 ", 2) == (360, 480)
    for bad, ndim in (("1x3x0x4", 4), ("360x", 2), ("1x3x360", 4), ("axb", None), ("-1x3", None), ("", None)):
        with pytest.raises(ValueError, match="must look like"):
            parse_dims(bad, ndim)


def test_markdown_table():
    md = artifact_table_markdown()
    lines = md.splitlines()
    assert md.endswith("\n") and len(lines) == 2 + len(ARTIFACTS)
    assert lines[0] == "| file | key | precision | made by | runs on | calibration | TensorRT | what |"
    assert all(line.count("|") == 9 for line in lines)
    assert lines[2 + [a.key for a in ARTIFACTS].index("calib_cache")].startswith(
        "| `calib.cache` | `calib_cache` | int8 | export `--int8` | tensorrt | yes | 10.x |")


def test_readme_artifact_table_is_the_rendered_table():
    text = (ROOT / "README.md").read_text()
    start, end = "<!-- artifacts -->", "<!-- /artifacts -->"
    if start not in text:
        pytest.skip("README.md has no <!-- artifacts --> ... <!-- /artifacts --> block yet")
    block = text.split(start, 1)[1].split(end, 1)[0]
    assert block.strip() == artifact_table_markdown().strip(), (
        "README's artifact table is stale: paste unet_edge.formats.artifact_table_markdown() between the markers")


# --- every stage uses the table's names --------------------------------------------------------


def test_export_folder_holds_the_table_export_rows(tiny_export):
    names = {p.name for p in tiny_export.iterdir()}
    made = {n for n in names if not n.endswith(".json")}
    assert made == set(export_files(options=TINY_EXPORT_OPTIONS))
    assert EXPORT_REPORT in names and names - made - {EXPORT_REPORT} == {f"{n}.json" for n in made if n != "model.ts"}
    report = json.loads((tiny_export / EXPORT_REPORT).read_text())
    assert set(report["artifacts"]) == {a.key for a in ARTIFACTS if a.producer == "export"
                                        and a.option in ("", *TINY_EXPORT_OPTIONS)}
    for key, entry in report["artifacts"].items():
        assert Path(entry["path"]).name == artifact(key).file


def test_build_trtexec_bench_and_bundle_read_the_table(tiny_export, tmp_path):
    from benchmarks.plan import expand_artifacts
    from unet_edge.trt.builder import BuildOptions, resolve_onnx
    from unet_edge.trt.jetson import SCRIPT_NAME, SIDECAR_DIR, write_jetson_bundle
    from unet_edge.trt.trtexec import trtexec_commands

    for p in TRT_PRECISIONS:
        for mode in ("explicit", "implicit"):
            assert resolve_onnx(tiny_export, BuildOptions(precision=p, mode=mode)).name == build_source(p, mode).file
    line = trtexec_commands(tiny_export, 10, "int8", BuildOptions(mode="implicit"), engine_dir="e")[0]
    assert f"--onnx={tiny_export / 'model_fp32.onnx'}" in line.split() and "--saveEngine=e/model_int8.engine" in line
    assert f"--calib={tiny_export / 'calib.cache'}" in line and f"--memPoolSize=workspace:{DEFAULT_WORKSPACE_MIB}M" in line
    assert [p.name for p in expand_artifacts([str(tiny_export)])] == list(export_files(models_only=True,
                                                                                     options=TINY_EXPORT_OPTIONS))

    bundle = write_jetson_bundle(tiny_export, tmp_path / "jetson", log=lambda *a: None)
    names = {p.name for p in bundle.iterdir()}
    assert {*map(onnx_file, TRT_PRECISIONS), artifact("calib_cache").file, SCRIPT_NAME} <= names
    assert SCRIPT_NAME == artifact("jetson_script").file
    assert {p.name for p in (bundle / SIDECAR_DIR).iterdir()} == {f"{engine_file(p)}.json.in" for p in TRT_PRECISIONS}
    recipes = json.loads((bundle / "metadata.json").read_text())["bundle"]["trtexec"]
    for key, line in recipes.items():
        major, prec, mode = key.split(":")
        argv = line.split()
        assert f"--onnx={build_source(prec, mode).file}" in argv and f"--saveEngine={engine_file(prec)}" in argv
        assert f"--memPoolSize=workspace:{DEFAULT_WORKSPACE_MIB}M" in argv
        assert mode == "explicit" or int(major) in artifact("calib_cache").trt_majors
    script = (bundle / SCRIPT_NAME).read_text()
    assert all(f"{p}) OUT={engine_file(p)} ;;" in script for p in TRT_PRECISIONS)


# --- defaults defined once ---------------------------------------------------------------------

#: Files that still repeat a default or a file name; each waits on an edit by its owner (the lead
#: removes the entry with it). The test fails on any other file, and on an entry that no longer repeats.
PENDING: dict[str, str] = {}
#: default value -> a word the name of what it is the default of contains
WATCHED = {DEFAULT_CALIB_IMAGES: "calib", DEFAULT_WORKSPACE_MIB: "workspace"}


def _literal_default(node, context: str):
    if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "Option" and node.args:
        node = node.args[0]  # typer.Option(DEFAULT, ...)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        word = WATCHED.get(node.value)
        if word and word in context.lower():
            yield node.lineno, context, node.value


def repeated_defaults(tree: ast.AST) -> list[tuple[int, str, int]]:
    """(line, what, value) of literal defaults equal to a watched default: function parameters,
    annotated fields, ``typer.Option(N)`` and ``add_argument(..., default=N)``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            pos = node.args.posonlyargs + node.args.args
            pairs = list(zip(pos[len(pos) - len(node.args.defaults):], node.args.defaults))
            pairs += [(a, d) for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults) if d is not None]
            for a, d in pairs:
                found += _literal_default(d, f"{node.name}({a.arg})")
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            found += _literal_default(node.value, node.target.id)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            flags = " ".join(a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str))
            for kw in node.keywords:
                if kw.arg == "default":
                    found += _literal_default(kw.value, flags)
    return found


def repeated_file_names(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, name) of string literals that are exactly a table file name or the report name."""
    names = {a.file for a in ARTIFACTS} | {EXPORT_REPORT}
    return [(n.lineno, n.value) for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in names]


def _sources() -> list[Path]:
    # scripts kept beside a committed report (benchmarks/reports/<name>/) reproduce that report as it was run
    files = [ROOT / "cli.py"] + [p for d in ("unet_edge", "calibration", "benchmarks") for p in (ROOT / d).rglob("*.py")]
    return sorted(p for p in files if "reports" not in p.relative_to(ROOT).parts and p.name != "formats.py")


def test_the_checks_catch_a_repeated_default():
    tree = ast.parse("import typer\nclass O:\n    workspace_mib: int = 1024\n"
                     "def f(x, calib_images: int = 64, size=64): ...\n"
                     "def g(workspace_mib: int = typer.Option(1024, min=1), threads: int = 1024): ...\n"
                     "p.add_argument('--calib-images', type=int, default=64)\nq = 'model_int8.onnx'\n")
    assert sorted(repeated_defaults(tree)) == [(3, "workspace_mib", 1024), (4, "f(calib_images)", 64),
                                               (5, "g(workspace_mib)", 1024), (6, "--calib-images", 64)]
    assert repeated_file_names(tree) == [(7, "model_int8.onnx")]


def test_defaults_and_file_names_are_defined_once():
    offenders = {}
    for path in _sources():
        tree = ast.parse(path.read_text(), str(path))
        hits = [f"line {line}: {what} = {value}" for line, what, value in repeated_defaults(tree)]
        hits += [f"line {line}: {name!r}" for line, name in repeated_file_names(tree)]
        if hits:
            offenders[str(path.relative_to(ROOT))] = hits
    unexpected = {k: v for k, v in offenders.items() if k not in PENDING}
    assert not unexpected, f"defaults or file names repeated outside unet_edge/formats.py: {unexpected}"
    stale = sorted(set(PENDING) - set(offenders))
    assert not stale, f"no longer repeat anything; remove them from PENDING: {stale}"
    assert formats.DEFAULT_CALIB_IMAGES == 64 and formats.DEFAULT_WORKSPACE_MIB == 1024
