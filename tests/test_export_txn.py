"""Transactional export and artifact provenance.

* provenance: a folder mixing artifacts of two checkpoints is refused by ``bench``, ``build`` (before
  TensorRT is needed) and the Jetson bundle, naming the files; old artifacts without a record
  pass alone with a warning and are refused beside recorded ones.
* the export folder is replaced in one step: a failing export leaves it as it was and keeps the
  attempt in ``OUT.failed/``; a folder that is not an export is refused and kept; a second export
  into a locked folder is refused; stale staging folders are removed with a log line.
* fault injection: ``unet-edge export`` killed with SIGKILL at seeded random moments leaves ``OUT``
  the complete old export or the complete new one, every time.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from unet_edge.errors import ArtifactError, ExportError, Int8AccuracyError, UsageError
from unet_edge.io_utils import sha256
from unet_edge.provenance import SHA_KEY, ProvenanceWarning, check_consistent, check_sources, folder_sources

ROOT = Path(__file__).resolve().parents[1]


def _quiet(*_):
    pass


def _export(ckpt, out, log=_quiet, **kw):
    from unet_edge.export.pipeline import ExportOptions, export_all

    return export_all(ckpt, out, ExportOptions(progress=False, threads=1, parity_images=1, **kw), log=log)


@pytest.fixture(scope="module")
def ckpt_b(tiny_run, tmp_path_factory) -> Path:
    """A second checkpoint of the same model (one weight changed): another source."""
    import torch

    ck = torch.load(tiny_run["best"], map_location="cpu", weights_only=True)
    name = next(iter(ck["model"]))
    ck["model"][name] = ck["model"][name] + 0.01
    path = tmp_path_factory.mktemp("ckpt_b") / "other.pt"
    torch.save({"model": ck["model"], "meta": ck["meta"]}, path)
    return path


@pytest.fixture(scope="module")
def mixed(tiny_export, ckpt_b, tmp_path_factory) -> Path:
    """model.ts + model_fp32.onnx exported from checkpoint B, model_int8.onnx (+ sidecar) from A
    (best.pt): what an export killed half-way used to leave."""
    import shutil

    out = tmp_path_factory.mktemp("mixed") / "exp"
    _export(ckpt_b, out)
    for name in ("model_int8.onnx", "model_int8.onnx.json"):
        shutil.copy(tiny_export / name, out / name)
    return out


def _assert_names_both(message: str, tiny_run, ckpt_b) -> None:
    assert "model_fp32.onnx" in message and "model_int8.onnx" in message
    assert sha256(tiny_run["best"])[:12] in message and sha256(ckpt_b)[:12] in message
    assert "different checkpoints" in message and "re-export" in message


# ------------------------------------------------------------------------------------------ provenance


def test_mixed_folder_is_refused_by_bench_build_and_bundle(mixed, tiny_run, ckpt_b, tmp_path):
    from benchmarks.runner import BenchOptions, run_bench
    from unet_edge.trt.builder import BuildOptions, build_engine
    from unet_edge.trt.jetson import write_jetson_bundle

    with pytest.raises(ArtifactError) as e:
        check_sources([mixed])
    _assert_names_both(str(e.value), tiny_run, ckpt_b)
    with pytest.raises(ArtifactError) as e:
        run_bench([str(mixed)], tmp_path / "rep", BenchOptions(progress=False, memory="off", stream=False, plots=False))
    _assert_names_both(str(e.value), tiny_run, ckpt_b)
    assert not (tmp_path / "rep").exists()
    with pytest.raises(ArtifactError) as e:  # checked before TensorRT is imported: same error with or without it
        build_engine(mixed, tmp_path / "m.engine", BuildOptions(precision="int8"))
    _assert_names_both(str(e.value), tiny_run, ckpt_b)
    assert not (tmp_path / "m.engine").exists()
    with pytest.raises(ArtifactError) as e:
        write_jetson_bundle(mixed, tmp_path / "jetson", default_precision="fp32")
    _assert_names_both(str(e.value), tiny_run, ckpt_b)
    assert not (tmp_path / "jetson").exists()


def test_mixed_folder_exits_4_from_the_cli(mixed, tiny_run, ckpt_b, tmp_path):
    from typer.testing import CliRunner

    from cli import app

    for args in (["bench", str(mixed), "--report", str(tmp_path / "rep"), "--memory", "off", "--no-stream"],
                 ["build", str(mixed), "--out", str(tmp_path / "m.engine"), "--precision", "int8"],
                 ["build", str(mixed), "--jetson", str(tmp_path / "j"), "--precision", "fp32"]):
        r = CliRunner().invoke(app, args, catch_exceptions=False)
        assert r.exit_code == 4, (args, r.output)
        _assert_names_both(" ".join(r.output.split()), tiny_run, ckpt_b)  # rich may wrap long lines


def test_bench_refuses_an_export_of_another_checkpoint_than_the_one_given(tiny_export, ckpt_b, tiny_run):
    with pytest.raises(ArtifactError, match="different checkpoints") as e:
        check_sources([ckpt_b, tiny_export])
    assert "(given)" in str(e.value) and sha256(ckpt_b)[:12] in str(e.value)
    assert check_sources([tiny_run["best"], tiny_export]) == sha256(tiny_run["best"])


def test_artifacts_without_provenance_warn_alone_and_are_refused_beside_recorded_ones(tiny_run, tiny_export, tmp_path):
    """An export made before provenance (no record): alone it passes with a warning; next to a
    recorded file (a folder that mixes known sources) it is refused with 're-export'."""
    import shutil

    from unet_edge.artifacts import model_from_checkpoint
    from unet_edge.export.onnx_export import export_onnx

    model, meta, _ = model_from_checkpoint(tiny_run["best"])
    old = tmp_path / "old"
    export_onnx(model, meta.with_(extra={}), old / "model_fp32.onnx")
    assert folder_sources(old) == {old / "model_fp32.onnx": None}
    with pytest.warns(ProvenanceWarning, match="no source-checkpoint record"):
        assert check_sources([old]) is None
    shutil.copy(tiny_export / "model_int8.onnx", old / "model_int8.onnx")
    with pytest.raises(ArtifactError, match="model_fp32.onnx without a source-checkpoint record") as e:
        check_consistent(folder_sources(old))
    assert "model_int8.onnx from" in str(e.value) and "re-export" in str(e.value)


# --------------------------------------------------------------------------------- transactional export


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: sha256(p) for p in sorted(folder.iterdir())}


def test_failed_export_leaves_out_unchanged_and_keeps_the_attempt(tiny_run, ckpt_b, tmp_path, monkeypatch):
    """An INT8 check failure (the real check, on a report entry injected after a real export) raises
    Int8AccuracyError naming OUT.failed; OUT keeps the previous export byte for byte; the failed
    attempt's files and report (status failed, paths under OUT.failed) are there to read."""
    from unet_edge.export import pipeline

    out = tmp_path / "exp"
    _export(tiny_run["best"], out)
    before = _snapshot(out)
    real = pipeline._export_into

    def failing_check(*args, **kw):
        real(*args, **kw)
        report = args[4]
        report["int8_check"] = {"onnx_int8_cpu": {"passed": False, "status": "failed",
                                                  "message": "model_int8_cpu.onnx loses 9.00 mIoU points; pass --allow-int8-drop"}}

    monkeypatch.setattr(pipeline, "_export_into", failing_check)
    with pytest.raises(Int8AccuracyError, match="allow-int8-drop") as e:
        _export(ckpt_b, out)
    failed = tmp_path / "exp.failed"
    assert f"{out} is unchanged" in str(e.value) and str(failed / "export_report.json") in str(e.value)
    assert _snapshot(out) == before
    rep = json.loads((failed / "export_report.json").read_text())
    assert rep["status"] == "failed" and rep["error"].startswith("Int8AccuracyError") and rep[SHA_KEY] == sha256(ckpt_b)
    assert rep["artifacts"]["onnx_fp32"]["path"] == str(failed / "model_fp32.onnx")
    assert set(folder_sources(failed).values()) == {sha256(ckpt_b)}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".exp.lock", "exp", "exp.failed"]

    def broken_finish(stage, report):  # any other failure: same type (exit code), same guarantees
        raise ExportError("bundle step failed")

    monkeypatch.setattr(pipeline, "_export_into", real)
    with pytest.raises(ExportError, match="bundle step failed; .* is unchanged; the failed export"):
        pipeline.export_all(ckpt_b, out, pipeline.ExportOptions(progress=False, threads=1, parity_images=1),
                            log=_quiet, finish=broken_finish)
    assert _snapshot(out) == before
    assert json.loads((failed / "export_report.json").read_text())["error"] == "ExportError: bundle step failed"


def test_out_that_is_not_an_export_folder_is_refused_and_kept(tiny_run, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    with pytest.raises(UsageError, match=r"not an export folder \(no export_report.json\): todo.txt"):
        _export(tiny_run["best"], notes)
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        _export(tiny_run["best"], afile)
    with pytest.raises(UsageError, match="is under .*afile, which is a file"):
        _export(tiny_run["best"], afile / "exp")
    out = tmp_path / "exp"
    _export(tiny_run["best"], out)
    (out / "mine.txt").write_text("mine")
    with pytest.raises(UsageError, match="did not write: mine.txt"):
        _export(tiny_run["best"], out)
    assert (notes / "todo.txt").read_text() == "keep me" and afile.read_text() == "x" and (out / "mine.txt").is_file()
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name or p.name.endswith(".failed")]


def test_a_second_export_into_a_locked_folder_is_refused(tiny_run, tmp_path):
    from unet_edge.transaction import lock_for

    out = tmp_path / "exp"
    with lock_for(out):
        with pytest.raises(UsageError, match=rf"--out {out}: .*in use by pid {os.getpid()} .*another export"):
            _export(tiny_run["best"], out)
    assert not out.exists()
    assert _export(tiny_run["best"], out)["status"] == "ok"  # released: the next export runs


def test_stale_staging_is_removed_with_a_log_line(tiny_run, tmp_path):
    out = tmp_path / "exp"
    stale = tmp_path / ".exp.staging-999999"
    stale.mkdir()
    (stale / "model_fp32.onnx").write_bytes(b"half")
    lines: list[str] = []
    _export(tiny_run["best"], out, log=lines.append)
    assert not stale.exists()
    assert any("removed stale .exp.staging-999999" in line for line in lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".exp.lock", "exp"]


def test_swap_without_rename_exchange_and_recovery_of_an_interrupted_swap(tmp_path, monkeypatch):
    """Where renameat2(RENAME_EXCHANGE) is unavailable the swap is two renames; a kill between them
    leaves ``.OUT.old-<pid>`` and no OUT, and the next run puts the old folder back first."""
    from unet_edge import transaction
    from unet_edge.transaction import StagedFolder

    def staged(log=_quiet):
        return StagedFolder(tmp_path / "out", marker="r.json", owns=lambda n: True, log=log)

    with staged() as s:
        (s.path / "r.json").write_text("1")
        s.commit()
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir(), (tmp_path / "a" / "from_a").touch()
    swapped = transaction.exchange(tmp_path / "a", tmp_path / "b")
    assert swapped or sys.platform != "linux"  # renameat2(RENAME_EXCHANGE) on Linux (ext4, tmpfs, ...)
    if swapped:
        assert (tmp_path / "b" / "from_a").is_file() and not any((tmp_path / "a").iterdir())
    (tmp_path / "b" / "from_a").unlink(), (tmp_path / "a").rmdir(), (tmp_path / "b").rmdir()
    monkeypatch.setattr(transaction, "exchange", lambda a, b: False)
    with staged() as s:
        (s.path / "r.json").write_text("2")
        s.commit()
    assert (tmp_path / "out" / "r.json").read_text() == "2"
    os.rename(tmp_path / "out", tmp_path / ".out.old-4242")  # killed between the two renames
    (tmp_path / ".out.staging-4242").mkdir()
    lines: list[str] = []
    with staged(lines.append) as s:
        assert (tmp_path / "out" / "r.json").read_text() == "2"
    assert any("restored" in line and ".out.old-4242" in line for line in lines)
    assert any("removed stale .out.staging-4242" in line for line in lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "out"]


def test_cli_export_report_on_disk_is_the_final_one(tiny_run, tmp_path):
    """export --jetson: the bundle (and engine, None without TensorRT) are in export_report.json
    as in --json; the bundle records the source checkpoint; --jetson inside --out is refused."""
    from typer.testing import CliRunner

    from cli import app

    out, jet = tmp_path / "exp", tmp_path / "jetson"
    r = CliRunner().invoke(app, ["export", str(tiny_run["best"]), "--out", str(out), "--jetson", str(jet), "--json",
                                 "--threads", "1"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    printed = json.loads(r.stdout)
    assert printed == json.loads((out / "export_report.json").read_text())
    assert printed["jetson_bundle"] == str(jet) and "engine" in printed
    bundle = json.loads((jet / "metadata.json").read_text())["bundle"]
    assert bundle[SHA_KEY] == sha256(tiny_run["best"]) and bundle["source_checkpoint"] == str(tiny_run["best"].resolve())
    r = CliRunner().invoke(app, ["export", str(tiny_run["best"]), "--out", str(out), "--jetson", str(out / "j")])
    assert r.exit_code == 2 and "must be separate folders" in r.output


def test_bundle_is_replaced_whole(tiny_export, tiny_run, tmp_path):
    """A new bundle from an export without INT8 leaves no INT8 file of the previous bundle behind."""
    from unet_edge.trt.jetson import write_jetson_bundle

    jet = tmp_path / "jetson"
    write_jetson_bundle(tiny_export, jet, default_precision="fp32", log=_quiet)
    assert (jet / "model_int8.onnx").is_file() and (jet / "calib.cache.json").is_file()
    fp32_only = tmp_path / "exp"
    _export(tiny_run["best"], fp32_only)
    write_jetson_bundle(fp32_only, jet, default_precision="fp32", log=_quiet)
    assert not (jet / "model_int8.onnx").exists() and not (jet / "calib.cache").exists()
    assert json.loads((jet / "metadata.json").read_text())["bundle"]["precisions"] == ["fp32"]


# -------------------------------------------------------------------------------------- fault injection


def check_complete_export(out: Path) -> tuple[str, dict[str, str]]:
    """Assert ``out`` is one complete export: report status ok, exactly the files it lists (plus
    sidecars), each with the sha256 the report gives, each loadable, all from one checkpoint.
    Returns (source sha256, {file: sha256})."""
    import onnx

    from unet_edge.artifacts import read_meta

    report = json.loads((out / "export_report.json").read_text())
    assert report["status"] == "ok", report.get("error")
    names = {Path(e["path"]).name for e in report["artifacts"].values()}
    expected = names | {n + ".json" for n in names if n.endswith((".onnx", ".cache"))} | {"export_report.json"}
    assert {p.name for p in out.iterdir()} == expected
    for entry in report["artifacts"].values():
        path = out / Path(entry["path"]).name
        assert sha256(path) == entry["sha256"], path
        if path.suffix == ".onnx":
            onnx.load(str(path))
        if path.suffix in (".onnx", ".ts"):
            assert read_meta(path).extra[SHA_KEY] == report[SHA_KEY]
    assert set(folder_sources(out).values()) == {report[SHA_KEY]}
    return report[SHA_KEY], _snapshot(out)


def _kill_driver(ckpts: list[str], out: str, seed: int, kills: int) -> None:
    """Run in a fresh process (``python tests/test_export_txn.py ARGS``): import the CLI once, then
    fork one child per try that runs ``unet-edge export`` (the CLI's own code) and SIGKILL it at
    a seeded random moment; after every kill check that OUT is the old or the complete new export.
    The last child is killed as soon as its staging folder exists, so a stale one is left behind.
    Prints one JSON line of outcomes."""
    import onnxruntime  # noqa: F401  (the export's lazy imports and host probe, done once before forking,
    import onnxsim  # noqa: F401   so each child spends its time exporting)

    import cli
    import unet_edge.export.pipeline  # noqa: F401
    from unet_edge.host import probe_host

    probe_host()

    out_p, rng = Path(out), random.Random(seed)
    shas = {sha256(c): c for c in ckpts}

    def child(ckpt: str) -> int:
        pid = os.fork()
        if pid == 0:  # the child: the CLI, stdout/stderr to /dev/null
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1), os.dup2(devnull, 2)
            code = 1
            try:
                cli.app(["export", ckpt, "--out", out, "--threads", "1"], prog_name="unet-edge")
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            finally:
                os._exit(code)
        return pid

    def staging_of(pid: int) -> Path:
        return out_p.parent / f".{out_p.name}.staging-{pid}"

    outcomes = []
    old_sha, old_files = check_complete_export(out_p)
    t0 = time.perf_counter()
    pid = child(shas[next(s for s in shas if s != old_sha)])  # one uninterrupted run: its duration bounds the kills
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    full = time.perf_counter() - t0
    for i in range(kills):
        old_sha, old_files = check_complete_export(out_p)
        new_sha = next(s for s in shas if s != old_sha)
        pid = child(shas[new_sha])
        if i == kills - 1:
            deadline = time.monotonic() + 60
            while not staging_of(pid).exists() and time.monotonic() < deadline:
                time.sleep(0.002)
        else:
            time.sleep(rng.uniform(0.0, 1.2 * full))
        os.kill(pid, signal.SIGKILL)  # a finished child is a zombie until waited for: the kill is harmless
        _, status = os.waitpid(pid, 0)
        killed = os.waitstatus_to_exitcode(status) == -signal.SIGKILL
        sha, files = check_complete_export(out_p)
        assert (sha, files) == (old_sha, old_files) or sha == new_sha, f"try {i}: neither the old nor the new export"
        outcomes.append({"killed": killed, "state": "old" if files == old_files else "new",
                         "staging_left": staging_of(pid).exists()})
    print(json.dumps({"full_s": round(full, 2), "outcomes": outcomes}))


def test_sigkill_at_random_moments_leaves_the_old_or_the_new_export(tiny_run, ckpt_b, tmp_path):
    """``python cli.py export`` as a subprocess, SIGKILLed while it builds (seeded delay after its
    staging folder appears); then 6 more seeded kills of the same CLI command in forked processes
    (one interpreter start for all); after each kill OUT is the complete old export (same hashes)
    or the complete new one, and the next export removes the stale staging folders."""
    out = tmp_path / "exp"
    a, b = str(tiny_run["best"]), str(ckpt_b)
    t0 = time.perf_counter()
    _export(a, out)
    build_s = time.perf_counter() - t0
    old_sha, old_files = check_complete_export(out)
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "export", b, "--out", str(out), "--threads", "1"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    staging = tmp_path / f".exp.staging-{proc.pid}"
    deadline = time.monotonic() + 120
    while not staging.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(random.Random(7).uniform(0.0, build_s))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    sha, files = check_complete_export(out)
    assert (sha, files) == (old_sha, old_files) or sha == sha256(ckpt_b)

    driver = subprocess.run([sys.executable, __file__, json.dumps({"ckpts": [a, b], "out": str(out), "seed": 3,
                                                                   "kills": 6})],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    assert driver.returncode == 0, driver.stderr[-3000:]
    result = json.loads(driver.stdout.strip().splitlines()[-1])
    outcomes = result["outcomes"]
    assert len(outcomes) == 6 and sum(o["killed"] for o in outcomes) >= 3, result
    assert outcomes[-1]["killed"] and outcomes[-1]["state"] == "old" and outcomes[-1]["staging_left"], result

    lines: list[str] = []
    _export(a, out, log=lines.append)
    assert any(line.strip().startswith("removed stale .exp.staging-") for line in lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".exp.lock", "exp"]
    assert check_complete_export(out)[0] == sha256(tiny_run["best"])


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _kill_driver(**json.loads(sys.argv[1]))
