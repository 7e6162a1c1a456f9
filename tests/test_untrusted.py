"""Files from other people: a crafted checkpoint never runs its payload, in any command or library call.

The payload is a pickled object whose ``__reduce__`` is ``open(marker, "w")``: unpickling it with
``torch.load(weights_only=False)`` creates ``marker``. Every path that loads a checkpoint must refuse
it with an ArtifactError (exit 4) that names the file, and ``marker`` must not exist afterwards.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli import app
from unet_edge.artifacts import load_checkpoint, model_from_checkpoint, read_meta
from unet_edge.errors import ArtifactError
from unet_edge.runtime.loader import load_backend

runner = CliRunner()


class _Payload:
    """Unpickles as ``open(marker, "w")``: proof that code from the file ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_checkpoint(path: Path, marker: Path, legacy: bool = False) -> Path:
    """A dict with ``model`` and ``meta`` (the unet-edge checkpoint shape) whose ``meta`` is the payload."""
    obj = {"model": {"w": torch.zeros(1)}, "meta": _Payload(marker), "epoch": 1}
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    assert not marker.exists()  # saving runs nothing
    return path


@pytest.fixture
def evil(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "PWNED"
    return _evil_checkpoint(tmp_path / "evil.pt", marker), marker


def _video(path: Path, n: int = 3, size=(48, 64)) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (size[1], size[0]))
    for i in range(n):
        w.write(np.full((*size, 3), 40 * i, np.uint8))
    w.release()
    return path


def _refused(r, path: Path, marker: Path) -> None:
    out = r.stdout + r.stderr
    assert not marker.exists(), f"the payload ran: {out}"
    assert r.exit_code == 4, out
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and str(path) in errors[0], r.stderr
    assert "weights_only=True" in errors[0] and "will not run code from a file" in errors[0]
    assert "Traceback" not in out


def test_the_payload_is_live(evil):
    """The crafted file does run its payload under weights_only=False: the refusals below mean something."""
    path, marker = evil
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("command", ["eval", "run", "export", "bench", "build", "train-resume"])
def test_cli_never_runs_a_crafted_checkpoint(command, evil, folder_dataset, tmp_path):
    path, marker = evil
    if command == "eval":
        args = ["eval", path, "--data", folder_dataset, "--device", "cpu"]
    elif command == "run":
        args = ["run", path, "--source", _video(tmp_path / "in.mp4"), "--out", tmp_path / "o.mp4", "--device", "cpu"]
    elif command == "export":
        args = ["export", path, "--out", tmp_path / "exp"]
    elif command == "bench":
        args = ["bench", path, "--report", tmp_path / "rep", "--device", "cpu", "--memory", "off", "--no-stream",
                "--no-plots", "--iters", "1", "--warmup", "0"]
    elif command == "build":  # takes ONNX or export folders; reads the metadata of what it is given
        args = ["build", path, "--out", tmp_path / "m.engine"]
    else:
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        path = _evil_checkpoint(run_dir / "last.pt", marker)
        args = ["train", "--data", folder_dataset, "--out", run_dir, "--resume", "--preset", "tiny", "--epochs", "1",
                "--batch-size", "4", "--crop", "48x64", "--device", "cpu"]
    r = runner.invoke(app, [str(a) for a in args])
    _refused(r, path, marker)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
@pytest.mark.parametrize("fn", [load_checkpoint, read_meta, model_from_checkpoint, load_backend],
                         ids=lambda f: f.__name__)
def test_library_never_runs_a_crafted_checkpoint(fn, legacy, tmp_path):
    marker = tmp_path / "PWNED"
    path = _evil_checkpoint(tmp_path / "evil.pt", marker, legacy=legacy)
    with pytest.raises(ArtifactError) as e:
        fn(path)
    assert not marker.exists()
    assert str(path) in str(e.value)
    if not legacy or fn in (load_checkpoint, model_from_checkpoint):  # artifact_kind rejects a non-zip .pt first
        assert "weights_only=True" in str(e.value)


def test_real_checkpoints_load_with_weights_only(tiny_run):
    """best.pt as train() writes it holds tensors and plain data only (meta: plain JSON types)."""
    ck = torch.load(tiny_run["best"], weights_only=True)
    assert type(ck["meta"]["extra"]["train_host"]["versions"]["torch"]) is str
    model, meta, _ = model_from_checkpoint(tiny_run["best"])
    assert meta.class_names == ["class0", "class1", "class2"] and meta.num_classes == 3


@pytest.fixture(scope="module")
def tiny_ts(tiny_run, tmp_path_factory) -> Path:
    """The tiny checkpoint as TorchScript (what `export` writes as model.ts), without a whole export."""
    from unet_edge.export.torchscript import export_torchscript

    model, meta, _ = model_from_checkpoint(tiny_run["best"])
    return export_torchscript(model, meta, tmp_path_factory.mktemp("ts") / "model.ts")


def test_torchscript_metadata_is_validated_before_jit_load(tiny_ts, tmp_path):
    """A TorchScript file whose embedded metadata was edited is refused before torch.jit.load, naming the field."""
    src = tiny_ts
    bad = tmp_path / "edited.ts"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("extra/unet_edge.json"):
                meta = json.loads(data)
                meta["palette"] = meta["palette"][:-1]
                data = json.dumps(meta).encode()
            zout.writestr(item, data)
    with pytest.raises(ArtifactError, match=r"edited\.ts: metadata field 'palette' must have one colour per class \(3 "):
        load_backend(bad)
    assert load_backend(src).meta.palette == read_meta(src).palette  # the untouched file still loads


def test_corrupt_torchscript_is_an_artifact_error(tiny_ts, tmp_path):
    """A TorchScript zip whose code/data entries are garbage (metadata intact): torch.jit.load's RuntimeError
    becomes an ArtifactError naming the file."""
    src = tiny_ts
    bad = tmp_path / "garbled.ts"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            zout.writestr(item, data if item.filename.endswith("unet_edge.json") else b"garbage")
    with pytest.raises(ArtifactError, match="garbled.ts"):
        load_backend(bad)


# --- ModelMeta.from_dict: hand-edited metadata is refused naming the file and the field -----------------

_GOOD = {"arch": {"num_classes": 3, "base_channels": 8, "depth": 3}, "class_names": ["a", "b", "c"],
         "palette": [[0, 0, 0], [255, 0, 0], [0, 255, 0]], "ignore_index": 255, "input_size": [48, 64],
         "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "input_name": "images", "output_name": "logits",
         "precision": "int8", "dataset": {}, "extra": {}, "train_command": "", "format_version": 1}


def _edit(**changes) -> dict:
    d = json.loads(json.dumps(_GOOD))
    for k, v in changes.items():
        if v is ...:
            d.pop(k)
        elif "." in k:
            outer, inner = k.split(".")
            d[outer][inner] = v
        else:
            d[k] = v
    return d


def test_valid_metadata_round_trips():
    from unet_edge.metadata import ModelMeta

    meta = ModelMeta.from_dict(_GOOD, source="m.onnx")
    assert meta.input_size == (48, 64) and meta.std == (0.25, 0.25, 0.25) and meta.precision == "int8"
    assert ModelMeta.from_json(meta.to_json()) == meta
    binary = ModelMeta.from_dict(_edit(**{"arch.num_classes": 1}, class_names=["background", "road"],
                                       palette=[[0, 0, 0], [255, 255, 255]]))
    assert binary.binary and binary.class_names == ["background", "road"]


def test_to_dict_holds_plain_types_only():
    """str subclasses (torch.__version__ is a TorchVersion) and tuples would need unsafe globals under weights_only."""
    from unet_edge.metadata import ModelMeta

    meta = ModelMeta.from_dict(_GOOD).with_(extra={"versions": {"torch": torch.__version__}}, input_size=(8, 16))
    d = meta.to_dict()
    assert type(d["extra"]["versions"]["torch"]) is str and d["input_size"] == [8, 16]
    assert json.loads(json.dumps(d)) == d


@pytest.mark.parametrize("changes,field", [
    ({"arch": ...}, "'arch'"),
    ({"class_names": ...}, "'class_names'"),
    ({"palette": ...}, "'palette'"),
    ({"arch": [3]}, "'arch' must be an object"),
    ({"arch.num_classes": "3"}, "'arch.num_classes' must be an integer >= 1"),
    ({"arch.num_classes": 0}, "'arch.num_classes' must be an integer >= 1"),
    ({"arch.depth": 2.5}, "'arch.depth' must be an integer >= 1"),
    ({"arch.num_classes": 4}, "'class_names' must have arch.num_classes = 4 entries"),
    ({"class_names": ["a", "b", 3]}, "'class_names' must be a non-empty list of non-empty strings"),
    ({"palette": [[0, 0, 0], [255, 0, 0]]}, "'palette' must have one colour per class (3 class_names), has 2"),
    ({"palette": [[0, 0, 0], [256, 0, 0], [0, 0, 0]]}, "'palette' must be a list of [R, G, B] colours with ints 0-255"),
    ({"palette": [[0, 0], [255, 0, 0], [0, 0, 0]]}, "'palette' must be a list of [R, G, B]"),
    ({"ignore_index": "void"}, "'ignore_index' must be an integer"),
    ({"ignore_index": True}, "'ignore_index' must be an integer"),
    ({"input_size": [48]}, "'input_size' must be [H, W], two positive integers"),
    ({"input_size": [0, 64]}, "'input_size' must be [H, W]"),
    ({"input_size": "48x64"}, "'input_size' must be [H, W]"),
    ({"mean": [0.5, 0.5]}, "'mean' must be a list of 3 numbers"),
    ({"std": [0.2, 0.0, 0.2]}, "'std' must be positive"),
    ({"std": [0.2, "x", 0.2]}, "'std' must be a list of 3 numbers"),
    ({"input_name": 7}, "'input_name' must be a non-empty string"),
    ({"output_name": ""}, "'output_name' must be a non-empty string"),
    ({"precision": "fp8"}, "'precision' must be one of fp32, fp16, bf16, int8"),
    ({"extra": []}, "'extra' must be an object"),
    ({"dataset": "camvid"}, "'dataset' must be an object"),
    ({"train_command": ["x"]}, "'train_command' must be a string"),
    ({"format_version": "1"}, "'format_version' must be an integer"),
    ({"format_version": 99}, "format 99 is newer than this unet-edge understands"),
])
def test_invalid_metadata_names_the_file_and_the_field(changes, field):
    from unet_edge.metadata import ModelMeta

    with pytest.raises(ArtifactError) as e:
        ModelMeta.from_dict(_edit(**changes), source="models/m.onnx")
    msg = str(e.value)
    assert msg.startswith("models/m.onnx: ") and field in msg and "\n" not in msg


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "\xff"])
def test_metadata_that_is_not_a_json_object(text):
    from unet_edge.metadata import ModelMeta

    with pytest.raises(ArtifactError, match=r"^m\.onnx\.json: unet-edge metadata (is not valid JSON|must be a JSON object)"):
        ModelMeta.from_json(text.encode("latin-1") if text == "\xff" else text, source="m.onnx.json")


def test_engine_sidecar_is_validated(tmp_path):
    from unet_edge.trt.sidecar import read_sidecar

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    side = tmp_path / "m.engine.json"
    info = {"tensorrt_version": "10.3.0", "gpu": {}, "precision": "fp16", "io": [{"name": "images", "shape": [1, 3, 8, 8]}]}
    side.write_text(json.dumps({**_edit(input_size=[8, -8]), "engine": info}))
    with pytest.raises(ArtifactError, match=r"m\.engine\.json: metadata field 'input_size'"):
        read_sidecar(engine)
    side.write_text(json.dumps({**_GOOD, "engine": {**info, "io": "images"}}))
    with pytest.raises(ArtifactError, match=r"m\.engine\.json: engine field 'io'"):
        read_sidecar(engine)
    side.write_text(json.dumps({**_GOOD, "engine": info}))
    assert read_sidecar(engine)["engine"]["precision"] == "fp16"
    assert read_meta(engine).class_names == ["a", "b", "c"]


def test_unreadable_paths_are_artifact_errors(tmp_path):
    """A folder given as an artifact, or a missing file: ArtifactError naming the path, never an OSError."""
    with pytest.raises(ArtifactError, match=r"is a directory"):
        read_meta(tmp_path)
    with pytest.raises(ArtifactError, match=r"is a directory"):
        load_checkpoint(tmp_path)
    with pytest.raises(ArtifactError, match=r"checkpoint not found: .*gone\.pt"):
        load_checkpoint(tmp_path / "gone.pt")
