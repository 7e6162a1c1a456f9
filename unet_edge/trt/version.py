"""TensorRT version handling: import, parse ``tensorrt.__version__``, and gate version-specific code.

Supported: TensorRT 10.x (JetPack 6.1/6.2 ship 10.3; 10.16 is the last 10.x) and 11.x. The two
differ in how precision is chosen (TensorRT 10.x-to-11.x migration guide):

* 10.x: explicit (precision from the graph: FP16 tensors / Q/DQ nodes, strongly typed network) or
  implicit (``BuilderFlag.FP16``/``INT8`` on the FP32 graph + an INT8 calibrator).
* 11.x: strongly typed only. ``BuilderFlag.FP16``/``INT8``, ``IInt8EntropyCalibrator2`` and
  ``IBuilderConfig.int8_calibrator`` are removed; ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``
  is deprecated and ignored ("Strongly typed mode is always enabled", 11.4 docstring).
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from ..errors import BackendUnavailableError

#: TensorRT versions this code is written and checked against (tests/test_trt_api.py checks every
#: TensorRT name used under unet_edge/trt/ against the bindings of each).
SUPPORTED_VERSIONS = ("10.3", "10.16", "11.4")
#: Major versions accepted at run time.
SUPPORTED_MAJORS = (10, 11)


@dataclass(frozen=True, order=True)
class TrtVersion:
    """A TensorRT version, e.g. ``TrtVersion(10, 3, 0)``."""

    major: int
    minor: int
    patch: int = 0

    @classmethod
    def parse(cls, text: str) -> "TrtVersion":
        """``"10.3.0.30"`` / ``"10.3"`` / ``"11.4.1"`` -> TrtVersion.

        Raises:
            ValueError: no ``major.minor`` at the start.
        """
        m = re.match(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?", str(text))
        if not m:
            raise ValueError(f"cannot parse TensorRT version {text!r}")
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))

    @property
    def is_strongly_typed_only(self) -> bool:
        """True from 11.0: no precision builder flags, no implicit INT8 calibration."""
        return is_strongly_typed_only(self.major)

    @property
    def short(self) -> str:
        """``major.minor``, e.g. ``10.3``."""
        return f"{self.major}.{self.minor}"

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


def is_strongly_typed_only(major: int) -> bool:
    """True for TensorRT >= 11 (strongly typed networks only)."""
    return int(major) >= 11


def import_tensorrt():
    """Import and return the ``tensorrt`` module.

    Raises:
        BackendUnavailableError: the bindings or ``libnvinfer`` are missing, or the version is not
            supported (names what to install).
    """
    try:
        import tensorrt as trt
    except (ImportError, OSError) as e:
        raise BackendUnavailableError(
            f"TensorRT is not available on this host ({type(e).__name__}: {e}). Install TensorRT 10.x or "
            "11.x with its libraries (JetPack 6.1+ ships TensorRT 10.3; on x86 use NVIDIA's packages), or "
            "copy the Jetson bundle (unet-edge export --jetson DIR) to the target and build there"
        ) from e
    check_supported(installed_version(trt))
    return trt


def installed_version(trt) -> TrtVersion:
    """The version of an imported ``tensorrt`` module (its ``__version__``)."""
    return TrtVersion.parse(trt.__version__)


def check_supported(version: TrtVersion) -> TrtVersion:
    """Raise BackendUnavailableError unless ``version.major`` is 10 or 11."""
    if version.major not in SUPPORTED_MAJORS:
        raise BackendUnavailableError(
            f"TensorRT {version} is not supported (need 10.x or 11.x: the named-tensor API, "
            "execute_async_v3 and strongly typed networks); on Jetson upgrade to JetPack 6.1+ (TensorRT 10.3)")
    return version


def only_trt(*majors: int):
    """Mark a function taking the ``tensorrt`` module as first argument as valid only for the given
    major versions; calling it with another version raises BackendUnavailableError.

    The marker is also read statically by tests/test_trt_api.py, which checks the TensorRT names in
    the function against the bindings of those versions only.
    """

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(trt, *args, **kwargs):
            version = installed_version(trt)
            if version.major not in majors:
                raise BackendUnavailableError(
                    f"{fn.__name__} needs TensorRT {' or '.join(f'{m}.x' for m in majors)}; this host has {version}")
            return fn(trt, *args, **kwargs)

        wrapper.trt_majors = tuple(majors)
        return wrapper

    return deco
