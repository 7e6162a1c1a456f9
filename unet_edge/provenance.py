"""Provenance: which checkpoint each exported artifact comes from, and the check that artifacts
used together come from one.

``unet-edge export`` records the checkpoint it read in every artifact's metadata
(``ModelMeta.extra``): :data:`SHA_KEY` (sha256 of the checkpoint file) and :data:`NAME_KEY` (its
resolved path). The ONNX files and ``model.ts`` carry it embedded, the calibration cache in its
``calib.cache.json`` sidecar, TensorRT engines in their ``<engine>.json`` sidecar (copied from
the ONNX they were built from) and the Jetson bundle in ``metadata.json``.

:func:`check_consistent` refuses files that come from different checkpoints, and files without a
record (written by an unet-edge older than this) next to files with one. Artifacts that all lack a
record pass with a :class:`ProvenanceWarning`: nothing can be told about them. ``bench``, ``build``
and the Jetson bundle writer call it on the folders they read.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from .errors import ArtifactError, UnetEdgeWarning
from .formats import ENGINE_SUFFIXES, artifact
from .io_utils import sha256

SHA_KEY = "source_checkpoint_sha256"
NAME_KEY = "source_checkpoint"
#: Suffixes of exported artifacts inside a folder (ONNX, TorchScript, TensorRT plans).
ARTIFACT_SUFFIXES = (".onnx", ".ts", ".xml", ".pt2") + ENGINE_SUFFIXES
#: The INT8 calibration cache; its provenance is in ``calib.cache.json``.
CALIB_CACHE_NAME = artifact("calib_cache").file


class ProvenanceWarning(UnetEdgeWarning):
    """Artifacts carry no source-checkpoint record, so their common origin cannot be checked."""


def source_record(checkpoint: str | os.PathLike) -> dict:
    """``{NAME_KEY: resolved path, SHA_KEY: hex sha256}`` of a checkpoint file, for ``ModelMeta.extra``."""
    path = Path(checkpoint)
    return {NAME_KEY: str(path.resolve()), SHA_KEY: sha256(path)}


def artifact_source(path: str | os.PathLike) -> tuple[str | None, str | None]:
    """(sha256, checkpoint path) an artifact was exported from; (None, None) without a record.

    A checkpoint is its own source (its file's sha256). ``calib.cache`` and other ``*.cache``
    files are read through their ``<file>.json`` sidecar.

    Raises:
        ArtifactError: the file is missing, unreadable or has invalid metadata.
    """
    from .metadata import sidecar_path

    path = Path(path)
    if path.suffix == ".cache":
        side = sidecar_path(path)
        if not side.is_file():
            return None, None
        try:
            extra = json.loads(side.read_bytes()).get("extra", {})
        except (OSError, ValueError, AttributeError) as e:
            raise ArtifactError(f"cannot read {side} ({e}); re-export the folder") from e
    else:
        from .artifacts import artifact_kind, read_meta

        if artifact_kind(path) == "checkpoint":
            return sha256(path), str(path.resolve())
        extra = read_meta(path).extra
    sha = extra.get(SHA_KEY) if isinstance(extra, dict) else None
    if not isinstance(sha, str) or not sha:
        return None, None
    return sha, str(extra.get(NAME_KEY) or "?")


def folder_artifacts(folder: str | os.PathLike) -> list[Path]:
    """The exported artifacts in ``folder`` (not recursive): files ending in
    :data:`ARTIFACT_SUFFIXES` and ``calib.cache``, hidden files (temporaries) excluded; sorted."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and (p.suffix.lower() in ARTIFACT_SUFFIXES or p.name == CALIB_CACHE_NAME))


def folder_sources(folder: str | os.PathLike) -> dict[Path, str | None]:
    """{artifact path: source checkpoint sha256, or None without a record} for every exported
    artifact in ``folder`` (:func:`folder_artifacts`).

    Raises:
        ArtifactError: ``folder`` is not a folder; an artifact is unreadable.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"{folder} is not a folder")
    return {p: artifact_source(p)[0] for p in folder_artifacts(folder)}


def check_consistent(paths, where: str | os.PathLike | None = None) -> str | None:
    """Check that artifacts come from one checkpoint; return its sha256 (None when none records one).

    Checkpoints among ``paths`` count with their own sha256 once some artifact records a source
    (an artifact of another checkpoint is refused); artifacts without a record beside artifacts
    with one are refused; when no artifact records a source a :class:`ProvenanceWarning` is issued.

    Args:
        paths: artifact files (ONNX, TorchScript, engines, ``calib.cache``, checkpoints).
        where: the folder named in messages (default: the common parent, if any).

    Raises:
        ArtifactError: the files come from different checkpoints or mix recorded and unrecorded
            sources; every file is named with its source.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        return None
    sources = {p: artifact_source(p) for p in paths}
    from .artifacts import artifact_kind

    ckpts = {p for p in paths if p.suffix != ".cache" and artifact_kind(p) == "checkpoint"}
    exported = {p: s for p, s in sources.items() if p not in ckpts}
    known = {s[0] for s in exported.values() if s[0]}
    if where is None:
        parents = {p.parent for p in paths}
        where = parents.pop() if len(parents) == 1 else None
    at = f"{where}: " if where is not None else ""
    redo = (f"re-export with one `unet-edge export CHECKPOINT --out {where if where is not None else 'DIR'}` "
            "(it replaces the whole folder)")
    if known:
        groups: dict[str, list[Path]] = {}
        for p, (sha, _) in sources.items():
            groups.setdefault(sha or "", []).append(p)
        if len(groups) > 1:
            names = {sha: next((sources[p][1] for p in ps if sources[p][1]), None) for sha, ps in groups.items()}
            parts = []
            for sha, ps in groups.items():
                files = ", ".join(_show(p, where) for p in ps)
                if not sha:
                    parts.append(f"{files} without a source-checkpoint record (exported by an older unet-edge)")
                else:
                    given = " (given)" if all(p in ckpts for p in ps) else ""
                    parts.append(f"{files} from {names[sha]}{given} (sha256 {sha[:12]})")
            raise ArtifactError(f"{at}artifacts come from different checkpoints: {'; '.join(parts)}. Mixed files "
                                f"give meaningless comparisons; {redo}")
        return known.pop()
    if exported:
        files = ", ".join(_show(p, where) for p in exported)
        warnings.warn(f"{at}{files} carr{'ies' if len(exported) == 1 else 'y'} no source-checkpoint record "
                      f"(exported by an older unet-edge), so their common origin is not checked; {redo}",
                      ProvenanceWarning, stacklevel=2)
    return None


def check_sources(paths) -> str | None:
    """:func:`check_consistent` for command arguments: each folder on its own (its exported
    artifacts, :func:`folder_artifacts`), then all files and folders together.

    Returns:
        The common source sha256, or None when no artifact records one.

    Raises:
        ArtifactError: see :func:`check_consistent`; the first folder at fault is named.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = folder_artifacts(p)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ProvenanceWarning)  # warned once, below, for all files
                check_consistent(found, where=p)
            files += found
        elif p.is_file():
            files.append(p)
    unique = list(dict.fromkeys(files))
    return check_consistent(unique) if unique else None


def _show(path: Path, where) -> str:
    return path.name if where is not None and path.parent == Path(where) else str(path)
