"""TensorRT engines for unet-edge: build (Python API or trtexec), engine sidecars and Jetson
deployment bundles. The backend that runs an engine is :mod:`unet_edge.runtime.trt_backend`
(runtime imports trt, never the reverse).

Nothing here imports ``tensorrt`` at module import time: it is imported by
:func:`unet_edge.trt.version.import_tensorrt` when a build or an engine load needs it, and raises
:class:`unet_edge.errors.BackendUnavailableError` where TensorRT is absent.

Naming convention (checked by tests/test_trt_api.py): the ``tensorrt`` module is always bound to
``trt``, and TensorRT objects are only held in variables (or ``self._<name>`` attributes) named
``logger``, ``builder``, ``network``, ``parser``, ``config``, ``profile``, ``timing_cache``,
``net_tensor``, ``parse_error``, ``plan``, ``runtime``, ``engine``, ``context``; those names are
not used for anything else in this package (nor in ``runtime/trt_backend.py``, checked
with it), so every attribute used on them can be checked
against the TensorRT bindings of each supported version.
"""
