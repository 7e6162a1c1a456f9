"""benchmarks.ship_reference: a finished run becomes the shipped model, its card and its report folder."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

import benchmarks.ship_reference as ship
from unet_edge.io_utils import sha256


def test_a_run_is_shipped_with_card_log_and_overlay(tiny_run, tiny_export, tmp_path, monkeypatch):
    models, reports = tmp_path / "models", tmp_path / "reports"
    models.mkdir()
    monkeypatch.setattr(ship, "MODELS_DIR", models)
    monkeypatch.setattr(ship, "REPORTS", reports)
    val = tmp_path / "data" / "val"
    val.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(val / f"SEQ_{i:03d}.png"), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    cv2.imwrite(str(val / "OTHER_000.png"), np.zeros((48, 64, 3), np.uint8))
    ship.main(["--run", str(tiny_run["out"]), "--export", str(tiny_export), "--data", str(tmp_path / "data"),
               "--name", "tiny-ref", "--sequence", "SEQ", "--frame", "2", "--notes", "a test"])

    pt = models / "tiny-ref.pt"
    assert pt.read_bytes() == tiny_run["best"].read_bytes()
    card = json.loads((models / "tiny-ref.json").read_text())
    assert card["sha256"] == sha256(pt)
    assert card["val_miou"] == pytest.approx(tiny_run["summary"]["best_miou"])
    assert card["best_epoch"] == tiny_run["summary"]["best_epoch"]
    assert card["notes"] == "a test" and card["recipe"]["batch_size"] == 4
    assert card["export_eval"] == {}  # the tiny export scored nothing (no eval data)
    folder = reports / "reference-tiny-ref"
    assert {p.name for p in folder.iterdir()} == {"log.csv", "curves.png", "export_report.json", "overlay.png"}
    assert (folder / "export_report.json").read_bytes() == (tiny_export / "export_report.json").read_bytes()
    overlay = cv2.imread(str(folder / "overlay.png"))
    frame = cv2.imread(str(val / "SEQ_001.png"))  # frame 2 of the sequence
    assert overlay.shape == frame.shape
    assert np.abs(overlay.astype(int) - frame.astype(int)).mean() > 5  # class colours blended in


def test_card_command_names_no_machine_path(tmp_path):
    cmd = f"cli.py train --data ../shared/datasets/camvid --out {tmp_path}/runs/a --resume --report={tmp_path}/r.md"
    assert ship.portable_command(cmd, tmp_path) == \
        "cli.py train --data ../shared/datasets/camvid --out runs/a --resume --report=r.md"
    assert ship.portable_command("cli.py train --out /elsewhere/x 'a b'", tmp_path) == "cli.py train --out /elsewhere/x 'a b'"
    assert ship.portable_command(None, tmp_path) is None
