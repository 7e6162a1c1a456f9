"""The training-throughput benchmark: real steps of the trainer's own step function, per variant."""
from __future__ import annotations

import json

import pytest
import torch

from benchmarks.train_throughput import run


def test_throughput_report_times_each_variant_and_writes_files(tmp_path):
    n = torch.get_num_threads()
    try:
        r = run("tiny", batch_size=2, crop=(32, 48), num_classes=3, steps=2, rounds=1,
                variants=("eager", "channels_last", "lovasz", "low_res"), threads=1, out=tmp_path)
    finally:
        torch.set_num_threads(n)
    rows = {row["variant"]: row for row in r["rows"]}
    assert set(rows) == {"eager", "channels_last", "lovasz", "low_res"} and rows["eager"]["speedup"] == 1.0
    for row in rows.values():
        assert row["step_ms"] > 0 and row["images_per_s"] == pytest.approx(2 / (row["step_ms"] / 1e3), rel=0.01)
    assert json.loads((tmp_path / "train_throughput.json").read_text())["rows"] == r["rows"]
    assert "| channels_last |" in (tmp_path / "train_throughput.md").read_text()


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="unknown variant"):
        run("tiny", variants=("eager", "xla"))


def _baseline_and_ema_runs(tiny_run, tmp_path, miou_change: float):
    """Two copies of the tiny run: ``baseline`` and ``ema`` (its train_config says ema=0.99 and its
    val mIoU is ``miou_change`` higher)."""
    import shutil

    base, other = tmp_path / "baseline", tmp_path / "ema"
    shutil.copytree(tiny_run["out"], base)
    shutil.copytree(tiny_run["out"], other)
    ck = torch.load(other / "best.pt", weights_only=True)
    ck["meta"]["extra"]["train_config"]["ema"] = 0.99
    ck["meta"]["extra"]["val_metrics"]["miou"] += miou_change
    torch.save(ck, other / "best.pt")
    return base, other


def test_ablation_table_names_the_changed_option_and_the_delta(tiny_run, tmp_path):
    from benchmarks.ablation import read_run, table
    from unet_edge.errors import ArtifactError

    base, other = _baseline_and_ema_runs(tiny_run, tmp_path, 0.0125)
    old = torch.load(base / "best.pt", weights_only=True)  # a baseline trained before two options existed
    for key in ("lovasz_weight", "low_res", "scale"):
        del old["meta"]["extra"]["train_config"][key]
    torch.save(old, base / "best.pt")
    rows, md = table([read_run(base), read_run(other)])
    assert rows[0]["changed"] == "(baseline)" and rows[0]["delta_points"] == 0.0
    assert rows[1]["changed"] == "ema=0.99" and rows[1]["delta_points"] == pytest.approx(1.25)
    off = tiny_run["summary"]["logit_offsets"]  # logit_offsets is no recipe difference, but its gain has a column
    assert rows[0]["offsets_points"] == pytest.approx(100 * (off["val_miou_after"] - off["val_miou_before"]), abs=0.006)
    assert "| ema | ema=0.99 |" in md
    from benchmarks.ablation import merge_previous

    gone = {**rows[1], "run": "dice05", "changed": "dice_weight=0.5", "miou": 0.5}
    merged = merge_previous(rows, [rows[0], gone, {**rows[1], "miou": 0.0}])  # ema is on disk: today's row wins
    assert [(r["run"], r["miou"]) for r in merged] == [("baseline", rows[0]["miou"]), ("dice05", 0.5),
                                                       ("ema", rows[1]["miou"])]
    rows2, md2 = table([read_run(base), read_run(other)], [rows[0], gone])  # one table, merged rows included
    assert rows2 == merged and "| dice05 | dice_weight=0.5 |" in md2
    assert md2.index("| dice05 |") < md2.index("| ema |")
    with pytest.raises(ArtifactError, match="the earlier report's baseline is ema"):
        merge_previous(rows, [rows[1], gone])
    (other / "summary.json").unlink()
    with pytest.raises(ArtifactError, match="is the run finished"):
        read_run(other)


def test_ablation_row_against_a_baseline_whose_folder_is_gone(tiny_run, tmp_path):
    import shutil

    from benchmarks.ablation import main, table_on_previous
    from unet_edge.errors import ArtifactError

    base, other = _baseline_and_ema_runs(tiny_run, tmp_path, -0.02)
    main([str(base), "--out", str(tmp_path / "r1")])
    first = json.loads((tmp_path / "r1" / "ablation.json").read_text())
    assert first["baseline_config"]["ema"] == 0.0 and [r["run"] for r in first["rows"]] == ["baseline"]
    shutil.rmtree(base)
    main([str(other), "--previous", str(tmp_path / "r1" / "ablation.json"), "--baseline-from-previous",
          "--out", str(tmp_path / "r2")])
    second = json.loads((tmp_path / "r2" / "ablation.json").read_text())
    assert [r["run"] for r in second["rows"]] == ["baseline", "ema"]
    assert second["rows"][0] == first["rows"][0] and second["baseline_config"] == first["baseline_config"]
    assert second["rows"][1]["changed"] == "ema=0.99" and second["rows"][1]["delta_points"] == pytest.approx(-2.0)
    assert "| ema | ema=0.99 |" in (tmp_path / "r2" / "ablation.md").read_text()
    with pytest.raises(ArtifactError, match="no baseline_config"):
        table_on_previous([], {"rows": first["rows"]})
