"""Training throughput of one U-Net step on this host, per variant: PyTorch eager in NCHW
(contiguous), eager in channels_last, and ``torch.compile`` (Inductor; its compile time reported
apart) in NCHW and in channels_last (``compile_cl``, what ``train --compile`` runs); and two recipe costs on top of channels_last: ``lovasz`` (``--lovasz-weight 1``) and
``low_res`` (a ``--low-res`` step: the crop at half size). Every variant runs the trainer's own
step (:func:`unet_edge.train.train_step`: autocast in the precision ``--precision auto`` picks here, loss, backward, AdamW) on the same random batch,
in interleaved rounds, so load drift on a shared machine hits all variants alike. This is the
"throughput first" half of the CPU-hour recipe: a variant that trains more images per second
buys epochs inside ``--time-budget``.

    python -m benchmarks.train_throughput --preset edge --batch-size 8 --crop 256x320 \\
        --out benchmarks/reports/train-throughput-x86-amx
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch

from unet_edge.data.train_split import low_res_crop
from unet_edge.host import probe_host, resolve_threads
from unet_edge.io_utils import write_json_atomic, write_text_atomic
from unet_edge.model import UNet, config_from_preset
from unet_edge.precision import choose_precision
from unet_edge.train import train_step

from .hostinfo import host_info

VARIANTS = ("eager", "channels_last", "compile", "compile_cl", "lovasz", "low_res")
#: the variants that train in channels_last
NHWC = ("channels_last", "compile_cl", "lovasz", "low_res")


def _make(variant: str, base: torch.nn.Module, lr: float):
    model = copy.deepcopy(base)
    if variant in NHWC:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    net = torch.compile(model) if variant.startswith("compile") else model
    return net, opt


def run(preset: str = "edge", batch_size: int = 8, crop: tuple[int, int] = (256, 320), num_classes: int = 11,
        steps: int = 4, rounds: int = 3, variants: tuple[str, ...] = VARIANTS, threads: int = 0,
        out: str | Path | None = None) -> dict:
    """Time ``rounds`` x ``steps`` training steps per variant, interleaved (after one untimed
    warm-up step each; ``compile``'s first step is its compile time). Returns and, with ``out``,
    writes ``train_throughput.json`` and ``.md``: per variant the median step time (ms), images/s,
    speedup against eager, and the compile/warm-up seconds.

    Raises:
        ValueError: an unknown variant.
    """
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise ValueError(f"unknown variant(s) {bad}; choose from {VARIANTS}")
    torch.set_num_threads(resolve_threads(threads))
    choice = choose_precision("cpu", "auto", host=probe_host())
    torch.manual_seed(0)
    base = UNet(config_from_preset(preset, num_classes, 0.0))
    scaler = torch.amp.GradScaler("cuda", enabled=False)

    def batch(hw):
        return torch.randn(batch_size, 3, *hw), torch.randint(0, num_classes, (batch_size, *hw))

    def timed_step(net, opt, xv, yv, lovasz) -> float:
        t = time.perf_counter()
        train_step(net, opt, scaler, xv, yv, "cpu", choice, 255, None, 0.0, lovasz_weight=lovasz).item()
        return time.perf_counter() - t

    nets, first = {}, {}
    full, low = batch(crop), batch(low_res_crop(crop))
    for v in variants:
        net, opt = _make(v, base, 1e-3)
        xv, yv = low if v == "low_res" else full
        xv = xv.contiguous(memory_format=torch.channels_last) if v in NHWC else xv
        nets[v] = (net, opt, xv, yv, 1.0 if v == "lovasz" else 0.0)
        first[v] = timed_step(*nets[v])
    times = {v: [] for v in variants}
    for _ in range(rounds):
        for v in variants:
            times[v] += [timed_step(*nets[v]) for _ in range(steps)]
    eager = float(np.median(times[variants[0]]))
    rows = [{"variant": v, "step_ms": round(float(np.median(times[v])) * 1e3, 1),
             "images_per_s": round(batch_size / float(np.median(times[v])), 2),
             "speedup": round(eager / float(np.median(times[v])), 3), "first_step_s": round(first[v], 1)}
            for v in variants]
    report = {"preset": preset, "batch_size": batch_size, "crop": list(crop), "precision": choice.to_dict(),
              "threads": torch.get_num_threads(), "steps_per_round": steps, "rounds": rounds,
              "torch": torch.__version__, "host": host_info(), "rows": rows}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "train_throughput.json", report)
        lines = [f"# Training throughput: {preset} U-Net, batch {batch_size}, crop {crop[0]}x{crop[1]}, "
                 f"{choice.precision}, {report['threads']} threads",
                 "", f"Host: {report['host'].get('cpu_class', '?')} ({report['host']['cpu'].get('model', '?')}), torch {torch.__version__}; "
                 f"median of {rounds} x {steps} interleaved steps.", "",
                 "| variant | step ms | images/s | speedup | first step s (compile) |", "| --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {r['variant']} | {r['step_ms']} | {r['images_per_s']} | {r['speedup']:.2f}x | {r['first_step_s']} |"
                  for r in rows]
        write_text_atomic(out / "train_throughput.md", "\n".join(lines) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="edge")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", default="256x320", help="HxW")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    h, w = (int(v) for v in a.crop.lower().split("x"))
    r = run(a.preset, a.batch_size, (h, w), steps=a.steps, rounds=a.rounds, variants=tuple(a.variants.split(",")),
            threads=a.threads, out=a.out)
    for row in r["rows"]:
        print(row)


if __name__ == "__main__":
    main()
