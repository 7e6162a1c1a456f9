"""Reference models shipped inside the package, addressed by name (``camvid-edge``).

``python cli.py run camvid-edge --source drive.mp4 --out overlay.mp4`` works right after
install: every command that takes an ARTIFACT accepts a name of :data:`REFERENCE_MODELS` where no
file of that name exists. The files are FP32 training checkpoints (weights and model metadata,
loaded with ``weights_only=True`` like any checkpoint) with their training log and a card
(``<name>.json``) beside them in ``unet_edge/models/``. Their SHA-256 is pinned here, so a
damaged or swapped file is refused instead of silently giving other numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ArtifactError
from .io_utils import sha256

#: Folder of the shipped model files (package data).
MODELS_DIR = Path(__file__).resolve().parent / "models"


@dataclass(frozen=True)
class ReferenceModel:
    """A shipped model: ``file`` in :data:`MODELS_DIR`, its SHA-256, and what it is.

    ``val_miou``: mIoU on the dataset's val split (fraction, 0-1) as measured at training time;
    ``licence``: the terms of the training data, which the weights inherit.
    """

    name: str
    file: str
    sha256: str
    dataset: str
    val_miou: float
    description: str
    licence: str

    @property
    def path(self) -> Path:
        return MODELS_DIR / self.file


CAMVID_LICENCE = ("Trained on CamVid (Brostow, Fauqueur, Cipolla, Pattern Recognition Letters 2009), whose images "
                  "and labels are for research use; the weights are shared on the same terms. The code is MIT.")

#: Name -> shipped model. One entry per file in unet_edge/models/ (card: ``<name>.json``, log: ``<name>.log.csv``).
REFERENCE_MODELS: dict[str, ReferenceModel] = {
    "camvid-edge": ReferenceModel(
        name="camvid-edge", file="camvid-edge.pt",
        sha256="a3f9f85769083fa9f3b6d7a4dbe1f743296be8f73201711ad99ecb2b7afa604d", dataset="camvid", val_miou=0.6767527311281845,
        description="edge U-Net (1.94 M parameters, 360x480) trained from scratch on CamVid's 367 train images with "
                    "`train --time-budget 60m --epochs 200 --rare-crop 0.3 --class-weights median --compile` "
                    "(channels_last) on 2 cores of an x86-amx Intel Xeon (bf16 autocast): 146 epochs, best at epoch 134; "
                    "per-class logit offsets fit for mIoU on training pixels folded into the head (`--logit-offsets`, "
                    "the default)",
        licence=CAMVID_LICENCE),
}


def resolve_artifact(spec: str | Path) -> Path:
    """The file an ARTIFACT argument names: ``spec`` itself when it exists, else the shipped
    reference model of that name (its SHA-256 checked).

    Raises:
        ArtifactError: neither a file nor a reference model (the message lists the names), or the
            shipped file is missing or does not match its pinned SHA-256.
    """
    path = Path(spec)
    if path.exists() or str(spec) not in REFERENCE_MODELS:
        if not path.exists() and REFERENCE_MODELS and path.suffix == "" and len(path.parts) == 1:
            raise ArtifactError(f"artifact not found: {spec} (no such file, and not a reference model: "
                                f"{', '.join(sorted(REFERENCE_MODELS))})")
        return path
    ref = REFERENCE_MODELS[str(spec)]
    if not ref.path.is_file():
        raise ArtifactError(f"reference model {ref.name}: {ref.path} is missing from this install; reinstall unet-edge")
    digest = sha256(ref.path)
    if digest != ref.sha256:
        raise ArtifactError(f"reference model {ref.name}: {ref.path} has SHA-256 {digest[:12]}..., expected "
                            f"{ref.sha256[:12]}...; the file is damaged or was replaced: reinstall unet-edge")
    return ref.path
