"""Backends for ``.pt2`` artifacts (written by :mod:`unet_edge.export.pt2`): the AOTInductor package
(``torch._inductor.aoti_load_package``) and the ExportedProgram (``torch.export.load(f).module()``).

Trust (details in :mod:`unet_edge.pt2_archive`): ``torch.export.load`` can run code from a file
(``sympy.sympify`` of its shape strings, ``exec`` of its guards, ``weights_only=False`` for
pickled payloads), so :class:`ExportedProgramBackend` validates the archive with
:func:`~unet_edge.pt2_archive.check_exported_archive` before torch reads it. An AOTInductor package
is a native shared library: loading it runs it. Load only packages you built or whose SHA-256 you
checked; :class:`AotiBackend` reads the package's metadata from the zip first and refuses one
compiled for CPU features this host lacks (it would die with SIGILL) or for another device.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import ArtifactError, BackendUnavailableError
from ..host import resolve_threads
from ..metadata import ModelMeta
from ..pt2_archive import (aoti_package_metadata, check_exported_archive, host_can_run_aoti, pt2_kind, read_pt2_meta,
                           stored_shape_rule)
from .base import Backend, Capabilities, DimRange, canonical_device
from .torch_backend import resolve_device


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def load_exported_program(path: str | Path, device: str = "cpu") -> torch.nn.Module:
    """The runnable module of an ExportedProgram ``.pt2``, after
    :func:`~unet_edge.pt2_archive.check_exported_archive` (nothing of a refused file reaches torch).

    The module takes float32 (N, 3, H, W) tensors on ``device`` (shapes:
    :func:`~unet_edge.pt2_archive.shape_rule`) and returns (N, K, H, W) logits; call it under
    ``torch.no_grad()``. Off CPU the weights move with ``torch.export.passes.move_to_device_pass``.

    Raises:
        ArtifactError: not an ExportedProgram, refused by the check, or torch cannot load it.
    """
    path = Path(path)
    if pt2_kind(path) != "exported_program":
        raise ArtifactError(f"{path} is not a torch.export ExportedProgram (.pt2)")
    check_exported_archive(path)
    try:
        ep = torch.export.load(str(path))
    except Exception as e:  # torch raises many types for a bad or newer-version archive
        raise ArtifactError(f"torch.export.load cannot load {path} ({_first_line(e)}); it may be from another "
                            f"PyTorch version (this is {torch.__version__}) or truncated; re-export it") from e
    if device != "cpu":
        from torch.export.passes import move_to_device_pass

        ep = move_to_device_pass(ep, device)
    return ep.module()


def load_aoti_package(path: str | Path, device: str = "cpu"):
    """The compiled model of an AOTInductor package (``torch._inductor.aoti_load_package``):
    call it with a float32 (N, 3, H, W) tensor on ``device``; it returns the logits tensor.

    Runs the package's native code (see the module docstring). Checks first, from the zip alone,
    that it is an AOTInductor package for ``device`` (``cpu``, ``cuda`` or ``cuda:N``) that this
    host's CPU can run.

    Raises:
        ArtifactError: not an AOTInductor package, or torch cannot load it.
        BackendUnavailableError: compiled for another device, machine or CPU features, or CUDA absent.
    """
    path = Path(path)
    if pt2_kind(path) != "aoti":
        raise ArtifactError(f"{path} is not an AOTInductor package (.pt2)")
    pkg = aoti_package_metadata(path)
    _check_package_device(path, pkg, device)
    kind = device.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(f"{path} is a CUDA package and this PyTorch has no CUDA device")
    if kind == "cpu":
        host_can_run_aoti(pkg, read_pt2_meta(path), path)
    index = int(device.split(":")[1]) if ":" in device else -1
    try:
        return torch._inductor.aoti_load_package(str(path), device_index=index)
    except Exception as e:
        raise ArtifactError(f"AOTInductor cannot load {path} ({_first_line(e)}); packages load only in the PyTorch "
                            f"version that built them (this is {torch.__version__}); re-export it") from e


def spatial_ranges(rule: dict) -> tuple[DimRange, DimRange]:
    """(H, W) :class:`~unet_edge.runtime.base.DimRange` of a :func:`~unet_edge.pt2_archive.shape_rule`."""
    return tuple(DimRange(min=r["min"], max=r["max"], multiple=r["multiple"], offset=r["offset"])
                 for r in (rule["height"], rule["width"]))


def _check_package_device(path, pkg: dict, device: str) -> None:
    built_for = pkg.get("AOTI_DEVICE_KEY", "cpu")
    if device != "auto" and built_for != device.split(":")[0]:
        raise BackendUnavailableError(f"{path} is an AOTInductor {built_for} package; it cannot run on {device}; "
                                      f"use --device {built_for} or export a {device.split(':')[0]} package")


class _Pt2Backend(Backend):
    """Shared by the two: threads, capabilities from the stored shape rule, NumPy in/out."""

    def __init__(self, path: str | Path, meta: ModelMeta | None, device: str, threads: int, details: dict):
        meta = meta or read_pt2_meta(path)
        super().__init__(meta, str(path))
        device = canonical_device(resolve_device(device))
        self._torch_device = torch.device(device)
        n_threads = None
        if device == "cpu":
            n_threads = resolve_threads(threads)
            torch.set_num_threads(n_threads)
        rule = stored_shape_rule(meta, path)
        self._caps = Capabilities(
            kind=self.name, device=device, precision="fp32",
            input_name=meta.input_name, input_shape=(None, int(meta.arch.get("in_channels", 3)), None, None),
            output_name=meta.output_name, output_shape=(None, meta.num_classes, None, None),
            batch_range=tuple(rule["batch"]), spatial=spatial_ranges(rule), threads=n_threads, artifact=self.path,
            details={"torch": torch.__version__, **details})
        self.runner = None

    def capabilities(self) -> Capabilities:
        """Batch and H/W as exported (``extra.pt2.shapes``: H = multiple*k + offset); FP32;
        ``details``: ``torch`` version (and for a package ``march``, ``cpu_isa``, ``built_on``)."""
        return self._caps

    @torch.no_grad()
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Logits float32 (N, K, H, W) for a float32 (N, 3, H, W) batch.

        Raises:
            DataError, UsageError: an input :meth:`Capabilities.check_input` refuses (an H or W
            the export does not serve, a batch outside its range).
            ArtifactError: the backend is closed.
        """
        if self.runner is None:
            raise ArtifactError(f"{self.label} for {self.path} is closed")
        x = torch.from_numpy(self._caps.check_input(batch)).to(self._torch_device)
        y = self.runner(x)
        if isinstance(y, (list, tuple)):
            y = y[0]
        return y.float().cpu().numpy()

    def close(self) -> None:
        self.runner = None
        if self._caps.device_type == "cuda":
            torch.cuda.empty_cache()


class AotiBackend(_Pt2Backend):
    """An AOTInductor-compiled package (``model_aoti_cpu.pt2``/``model_aoti_cuda.pt2``), FP32.

    Args:
        path: the package.
        meta: its metadata (read from the package when None).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (the package's own device).
        threads: CPU threads (``torch.set_num_threads``, which the package's OpenMP kernels use);
            0: the physical cores (:func:`unet_edge.host.resolve_threads`).

    Raises:
        ArtifactError, BackendUnavailableError: see :func:`load_aoti_package`. UsageError: bad device.
    """

    name = "aotinductor"

    def __init__(self, path: str | Path, meta: ModelMeta | None = None, device: str = "cpu", threads: int = 0):
        pkg = aoti_package_metadata(path)
        _check_package_device(path, pkg, device)
        if device == "auto":
            device = pkg.get("AOTI_DEVICE_KEY", "cpu")
        meta = meta or read_pt2_meta(path)
        info = meta.extra.get("pt2") if isinstance(meta.extra.get("pt2"), dict) else {}
        super().__init__(path, meta, device, threads,
                         {"march": info.get("march"), "cpu_isa": pkg.get("AOTI_CPU_ISA", ""),
                          "built_on": info.get("build_cpu_class"), "built_with_torch": info.get("torch")})
        self.runner = load_aoti_package(path, self.device)


class ExportedProgramBackend(_Pt2Backend):
    """A torch.export ExportedProgram (``model_exported.pt2``) run by PyTorch, FP32.

    Args: as :class:`AotiBackend`; on ``cuda`` the program's weights are moved with
    ``torch.export.passes.move_to_device_pass``.

    Raises:
        ArtifactError: see :func:`load_exported_program`. BackendUnavailableError: CUDA absent.
        UsageError: bad device.
    """

    name = "torch.export"

    def __init__(self, path: str | Path, meta: ModelMeta | None = None, device: str = "cpu", threads: int = 0):
        super().__init__(path, meta, device, threads, {})
        self.runner = load_exported_program(path, self.device)
