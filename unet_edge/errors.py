"""Typed exceptions of unet-edge.

The library raises these; only ``cli.py`` turns them into exit codes. Every message names the
bad input and says what to do about it.
"""
from __future__ import annotations


class UnetEdgeError(Exception):
    """Base class of every error unet-edge raises on purpose. ``exit_code`` is used by the CLI."""

    exit_code = 1


class DataError(UnetEdgeError):
    """A dataset folder, image or mask is missing, unreadable or not in a known layout."""

    exit_code = 3


class ArtifactError(UnetEdgeError):
    """A checkpoint, TorchScript, ONNX or engine file is missing, corrupt or lacks metadata."""

    exit_code = 4


class SourceError(UnetEdgeError):
    """A video source (file, folder, camera index or GStreamer pipeline) cannot be opened or read."""

    exit_code = 5


class BackendUnavailableError(UnetEdgeError):
    """A requested backend or precision cannot run on this host (e.g. TensorRT or CUDA absent)."""

    exit_code = 6


class ExportError(UnetEdgeError):
    """Exporting, simplifying or quantizing a model failed or produced a model that fails its checks."""

    exit_code = 7


class UsageError(UnetEdgeError):
    """An option value or combination the command cannot accept (the CLI's usage exit code)."""

    exit_code = 2


class Int8AccuracyError(ExportError):
    """An INT8 artifact lost more accuracy against FP32 than the export allows."""


class UnetEdgeWarning(UserWarning):
    """Base class of unet-edge warnings; the CLI prints them as ``warning:`` lines."""


class EmulatedPrecisionWarning(UnetEdgeWarning):
    """A precision was requested that this host only emulates (slow, but it runs)."""


class HostMismatchWarning(UnetEdgeWarning):
    """An artifact made for another CPU class runs here (its kernels may differ in speed or numbers)."""


class ClassMismatchWarning(UnetEdgeWarning):
    """A model and a dataset have the same number of classes but one side's names are generic (``class0``, ...)."""
