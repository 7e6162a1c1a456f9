"""OpenVINO IR files without OpenVINO: the weights file beside an ``.xml``, the unet-edge metadata
(sidecar or ``<rt_info>``) and the input shape, read with the standard library's XML parser.

Data and model layer (core imports only): :mod:`unet_edge.artifacts` reads an IR's metadata with
it, the backend (:mod:`unet_edge.runtime.openvino_backend`), the export
(:mod:`unet_edge.export.openvino`) and ``bench`` planning use the rest. The IR itself is written by
:func:`unet_edge.export.openvino.save_ir`.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from .errors import ArtifactError
from .metadata import METADATA_KEY, ModelMeta, sidecar_path

#: Suffix of an IR's graph file; its weights are the same name with :data:`WEIGHTS_SUFFIX`.
IR_SUFFIX = ".xml"
WEIGHTS_SUFFIX = ".bin"


def ir_weights_path(xml_path: str | Path) -> Path:
    """The weights file of an IR: ``model.xml`` -> ``model.bin`` (OpenVINO's own rule)."""
    return Path(xml_path).with_suffix(WEIGHTS_SUFFIX)


def read_ir_meta(xml_path: str | Path) -> ModelMeta:
    """The :class:`ModelMeta` of an IR: its sidecar ``<xml>.json`` when present, else the
    ``unet_edge`` entry of the IR's ``<rt_info>`` (both written by
    :func:`unet_edge.export.openvino.save_ir`).

    Raises:
        ArtifactError: the file is missing or not parseable XML, or carries no or invalid metadata.
    """
    xml_path = Path(xml_path)
    side = sidecar_path(xml_path)
    if side.is_file():
        try:
            return ModelMeta.from_json(side.read_bytes(), source=side)
        except OSError as e:
            raise ArtifactError(f"cannot read metadata sidecar {side}: {e.strerror or e}") from e
    if not xml_path.is_file():
        raise ArtifactError(f"OpenVINO IR not found: {xml_path}")
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as e:
        raise ArtifactError(f"cannot parse OpenVINO IR {xml_path} ({e}); it may be truncated; re-export it") from e
    entry = root.find(f"./rt_info/{METADATA_KEY}")
    if entry is None or "value" not in entry.attrib:
        raise ArtifactError(f"{xml_path} carries no unet-edge metadata (no sidecar {side.name}, no rt_info "
                            f"{METADATA_KEY!r}); re-export it with `unet-edge export --openvino`")
    return ModelMeta.from_json(entry.attrib["value"], source=xml_path)


def ir_input_shape(xml_path: str | Path) -> list[int | str]:
    """Dims of the IR's first ``Parameter`` (the input) as written in the ``.xml``: ints for static
    dims, the text for dynamic ones (``?``, ``1..8``). Standard-library XML, no OpenVINO needed,
    e.g. for planning benchmark rows.

    Raises:
        ArtifactError: not parseable, or no Parameter with a shape.
    """
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as e:
        raise ArtifactError(f"cannot parse OpenVINO IR {xml_path} ({e}); it may be truncated; re-export it") from e
    data = root.find("./layers/layer[@type='Parameter']/data")
    if data is None or "shape" not in data.attrib:
        raise ArtifactError(f"{xml_path} has no input (Parameter) with a shape; re-export it")
    parts = [d.strip() for d in data.attrib["shape"].split(",") if d.strip()]
    return [int(d) if d.isdigit() else d for d in parts]
