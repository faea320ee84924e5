"""MediaPipe's face mesh *with attention* as two ONNX graphs and a spec of the ops in between.

``face_landmark_with_attention.tflite`` (what FaceMesh runs with ``refine_landmarks=True``) computes
the 468-point mesh, then crops three regions (lips, each eye) out of a 48×48 feature map with
MediaPipe's own kernels and refines them with small heads — one network instead of mesh + iris
model twice, about a third of the arithmetic. Those kernels (``Landmarks2TransformMatrix``,
``TransformTensorBilinear``, ``TransformLandmarks``, all version 2) have no ONNX equivalent that
onnxruntime runs fast, and they are a few hundred multiply-adds, so the graph is cut around them:

* **backbone**: image → mesh, face flag, feature map(s) the crops read;
* **heads**: the cropped feature maps → raw region landmarks (crop coordinates);
* **spec** (JSON, stored in the heads graph's metadata under :data:`SPEC_KEY`): per region the
  custom ops' attributes and the constant scalings around them, so that
  :mod:`dmask_live.attention_mesh` computes exactly what the TFLite graph does in between.

The structure is read from the graph (which tensor feeds which op), not assumed; anything that
does not have the expected shape raises :class:`UnsupportedOpError`.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import helper

from .onnx_builder import UnsupportedOpError
from .onnx_ops import build_onnx
from .tflite_reader import Graph, Op

SPEC_KEY = "dmask_live.attention_spec"
SPEC_FORMAT = 1
_CUSTOM_OPS = {"Landmarks2TransformMatrix": 2, "TransformTensorBilinear": 2, "TransformLandmarks": 2}


def convert_attention_model(graph: Graph, name: str, doc: str) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """(backbone, heads) ONNX models of the parsed attention ``graph``; the spec is in heads' metadata."""
    spec = attention_spec(graph)
    names = {tensor.name: index for index, tensor in enumerate(graph.tensors)}
    features = sorted({region["feature"] for region in spec["regions"]})
    backbone_outputs = [spec["mesh"], spec["presence"], *features]
    head_inputs = [region["head_input"] for region in spec["regions"]]
    head_outputs = [head for region in spec["regions"] for head in region["outputs"].values()]
    backbone = build_onnx(_segment(graph, names, [], backbone_outputs), f"{name}_backbone", doc)
    heads = build_onnx(_segment(graph, names, head_inputs, head_outputs), f"{name}_heads", doc)
    helper.set_model_props(heads, {SPEC_KEY: json.dumps(spec, sort_keys=True)})
    onnx.checker.check_model(heads)
    return backbone, heads


def attention_spec(graph: Graph) -> dict:
    """What happens between backbone and heads, region by region (see the module docstring)."""
    tensors = graph.tensors
    producer = {out: op for op in graph.ops for out in op.outputs}
    consumers: dict[int, list[Op]] = {}
    for op in graph.ops:
        for index in op.inputs:
            consumers.setdefault(index, []).append(op)
    for op in graph.ops:
        if op.kind == "CUSTOM" and _CUSTOM_OPS.get(op.options["code"]) != op.options["version"]:
            code, version = op.options["code"], op.options["version"]
            raise UnsupportedOpError(f"custom op {code} version {version} is not supported")

    def custom(op: Op | None, code: str) -> bool:
        return op is not None and op.kind == "CUSTOM" and op.options["code"] == code

    def scaling(mul: Op) -> tuple[int, np.ndarray]:
        """(activation input, constant) of a MUL by a constant."""
        if mul.kind != "MUL" or len(mul.inputs) != 2:
            raise UnsupportedOpError(f"expected a MUL by a constant, found {mul.kind}")
        const = [i for i in mul.inputs if tensors[i].data is not None]
        if len(const) != 1:
            raise UnsupportedOpError("expected a MUL by exactly one constant")
        (activation,) = [i for i in mul.inputs if i not in const]
        return activation, tensors[const[0]].data.astype(np.float32)

    def reshape_source(index: int) -> int:
        op = producer.get(index)
        if op is None or op.kind != "RESHAPE":
            raise UnsupportedOpError(f"expected a RESHAPE producing {tensors[index].name!r}")
        return op.inputs[0]

    regions, mesh_names = [], set()
    for op in graph.ops:
        if not custom(op, "Landmarks2TransformMatrix"):
            continue
        attrs = op.options["attributes"]
        scaled_mesh, landmark_scale = scaling(producer[op.inputs[0]])
        mesh_names.add(tensors[reshape_source(scaled_mesh)].name)
        users = consumers.get(op.outputs[0], [])
        samplers = [u for u in users if custom(u, "TransformTensorBilinear")]
        matrix_muls = [u for u in users if u.kind == "MUL"]
        if len(samplers) != 1 or len(matrix_muls) != 1 or len(users) != 2:
            raise UnsupportedOpError("each transform matrix must feed one crop and one scaled copy")
        sampler = samplers[0]
        _, matrix_scale = scaling(matrix_muls[0])
        outputs = {}
        for user in consumers.get(matrix_muls[0].outputs[0], []):
            if not custom(user, "TransformLandmarks") or user.options["attributes"] not in ({}, None):
                raise UnsupportedOpError("the scaled matrix must only feed TransformLandmarks")
            head = tensors[reshape_source(user.inputs[0])].name
            (final,) = [c for c in consumers.get(user.outputs[0], []) if c.kind == "RESHAPE"]
            outputs[tensors[final.outputs[0]].name] = head
        subset = [int(v) for v in attrs["subset_idxs"]]
        regions.append({
            "rotation_indices": [int(attrs["left_rotation_idx"]), int(attrs["right_rotation_idx"])],
            "target_rotation": float(attrs["target_rotation_radians"]),
            "subset": subset,
            "crop_size": [int(attrs["output_width"]), int(attrs["output_height"])],
            "crop_scale": [float(attrs["scale_x"]), float(attrs["scale_y"])],
            "landmark_scale": float(landmark_scale.reshape(-1)[0]) if landmark_scale.size == 1 else None,
            "feature": tensors[sampler.inputs[0]].name,
            "sampler_size": [int(sampler.options["attributes"]["output_width"]),
                             int(sampler.options["attributes"]["output_height"])],
            "head_input": tensors[sampler.outputs[0]].name,
            "matrix_scale": matrix_scale.reshape(4, 4).tolist(),
            "outputs": outputs,
        })
    if not regions or len(mesh_names) != 1 or any(r["landmark_scale"] is None for r in regions):
        raise UnsupportedOpError("not an attention mesh: no region crops read from one scaled mesh")
    presence = [tensors[i].name for i in graph.outputs if tensors[i].shape[-1] == 1]
    if len(presence) != 1:
        raise UnsupportedOpError("expected one face-flag output of one value")
    return {
        "format": SPEC_FORMAT,
        "mesh": mesh_names.pop(),
        "presence": presence[0],
        "regions": regions,
    }


def _segment(graph: Graph, names: dict[str, int], inputs: list[str], outputs: list[str]) -> Graph:
    """The builtin ops that compute ``outputs`` from ``inputs`` (or from the graph input)."""
    producer = {out: op for op in graph.ops for out in op.outputs}
    stops = {names[n] for n in inputs} | set(graph.inputs)
    chosen: set[int] = set()
    stack = [names[n] for n in outputs]
    while stack:
        index = stack.pop()
        op = producer.get(index)
        if index in stops or op is None or id(op) in chosen:
            continue
        if op.kind == "CUSTOM":
            raise UnsupportedOpError(f"{graph.tensors[index].name!r} needs a custom op outside the cut")
        chosen.add(id(op))
        stack.extend(i for i in op.inputs if i >= 0)
    ops = [op for op in graph.ops if id(op) in chosen]
    return Graph(
        tensors=graph.tensors,
        ops=ops,
        inputs=[names[n] for n in inputs] if inputs else list(graph.inputs),
        outputs=[names[n] for n in outputs],
    )
