"""TFLite → ONNX conversion of MediaPipe's landmark networks (NCHW graphs, dynamic batch).

``convert_tflite(path_or_bytes, name)`` returns an :class:`onnx.ModelProto`. Modules:
``tflite_reader`` parses the flatbuffer, ``onnx_builder`` holds the layout strategy and graph
bookkeeping, ``onnx_ops`` has one handler per TFLite op, ``twin_branches`` merges parallel heads of
identical structure (the iris network's two) into one branch of grouped convolutions.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from .attention import SPEC_KEY, convert_attention_model
from .onnx_builder import UnsupportedOpError, same_pads
from .onnx_ops import build_onnx
from .tflite_reader import TfliteFormatError, read_tflite

# Bump when the produced graphs change, so built models are rebuilt (recorded in manifest.json).
CONVERTER_VERSION = "6"

__all__ = [
    "CONVERTER_VERSION",
    "SPEC_KEY",
    "convert_attention",
    "TfliteFormatError",
    "UnsupportedOpError",
    "build_onnx",
    "convert_tflite",
    "same_pads",
]


def convert_tflite(source: bytes | str | Path, name: str = "model") -> onnx.ModelProto:
    """Convert a TFLite flatbuffer (bytes or path) into an NCHW ONNX model."""
    graph = read_tflite(source)
    doc = f"{name}: converted from TFLite by dmask-live converter {CONVERTER_VERSION}"
    return build_onnx(graph, name, doc)


def convert_attention(
    source: bytes | str | Path, name: str = "model"
) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """MediaPipe's attention face mesh as (backbone, heads) ONNX models (see :mod:`.attention`)."""
    graph = read_tflite(source)
    doc = f"{name}: converted from TFLite by dmask-live converter {CONVERTER_VERSION}"
    return convert_attention_model(graph, name, doc)
