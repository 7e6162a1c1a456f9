"""Reference models by name: resolved, SHA-256 checked, usable by every command that takes an ARTIFACT."""
from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

import unet_edge.zoo as zoo
from unet_edge.errors import ArtifactError
from unet_edge.io_utils import sha256


@pytest.fixture
def shipped(tiny_run, tmp_path, monkeypatch):
    """A registry holding the tiny checkpoint as ``tiny-ref`` in a temporary models folder."""
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_run["best"], models / "tiny-ref.pt")
    ref = zoo.ReferenceModel("tiny-ref", "tiny-ref.pt", sha256(models / "tiny-ref.pt"), "folder", 0.5, "test", "test")
    monkeypatch.setattr(zoo, "MODELS_DIR", models)
    monkeypatch.setattr(zoo, "REFERENCE_MODELS", {"tiny-ref": ref})
    return models / "tiny-ref.pt"


def test_a_name_resolves_to_the_shipped_file(shipped, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert zoo.resolve_artifact("tiny-ref") == shipped
    (tmp_path / "tiny-ref").write_text("a local file of that name wins")
    assert zoo.resolve_artifact("tiny-ref").resolve() == (tmp_path / "tiny-ref").resolve()


def test_a_damaged_or_missing_shipped_file_is_refused(shipped):
    shipped.write_bytes(shipped.read_bytes()[:-10])
    with pytest.raises(ArtifactError, match="tiny-ref.*SHA-256"):
        zoo.resolve_artifact("tiny-ref")
    shipped.unlink()
    with pytest.raises(ArtifactError, match="missing from this install"):
        zoo.resolve_artifact("tiny-ref")


def test_an_unknown_bare_name_lists_the_reference_models(shipped, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ArtifactError, match="not a reference model: tiny-ref"):
        zoo.resolve_artifact("camvid-nope")


def test_eval_takes_a_reference_model_name(shipped, folder_dataset):
    from cli import app

    r = CliRunner().invoke(app, ["eval", "tiny-ref", "--data", str(folder_dataset), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["artifact"] == "tiny-ref" and json.loads(r.stdout)["miou"] > 0


def test_every_registered_model_is_shipped_with_its_card():
    for name, ref in zoo.REFERENCE_MODELS.items():
        assert ref.path.is_file(), f"{name}: {ref.path} missing"
        assert sha256(ref.path) == ref.sha256, f"{name}: {ref.path} does not match its pinned SHA-256"
        card = json.loads(ref.path.with_suffix(".json").read_text())
        assert card["name"] == name and card["val_miou"] == pytest.approx(ref.val_miou)


def test_each_card_describes_its_checkpoint():
    import torch

    for name, ref in zoo.REFERENCE_MODELS.items():
        card = json.loads(ref.path.with_suffix(".json").read_text())
        ck = torch.load(ref.path, map_location="cpu", weights_only=True)
        assert card["sha256"] == ref.sha256, f"{name}: the card names another file"
        assert card["best_epoch"] == ck["epoch"]
        assert card["val_miou"] == pytest.approx(ck["meta"]["extra"]["val_metrics"]["miou"])
        assert card["val_per_class_iou"] == pytest.approx(ck["meta"]["extra"]["val_metrics"]["per_class_iou"])
