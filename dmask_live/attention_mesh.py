"""MediaPipe's attention face mesh (``refine_landmarks=True``): 468 points plus refined lips, eyes, irises.

Runs the two ONNX halves that :mod:`dmask_live.convert.attention` makes of
``face_landmark_with_attention.tflite`` and, between them, MediaPipe's three custom kernels
(:mod:`dmask_live.attention_kernels`, following their TFLite reference implementations, version 2):

* ``Landmarks2TransformMatrix``: a 4×4 map from a region's crop to the 48×48 feature map, from the
  bounding box of the region's mesh points in a frame turned so that two of them are level;
* ``TransformTensorBilinear``: the crop of the feature map (bilinear, zero outside; pixel centres);
* ``TransformLandmarks``: the heads' crop-space points back to the 192×192 input, by that matrix
  times a constant scaling.

Everything is in the network's input pixels; :class:`AttentionMesh` returns raw arrays and leaves
the image projection to the landmark stage.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dmask_live import attention_kernels
from dmask_live.convert.attention import SPEC_FORMAT, SPEC_KEY
from dmask_live.inference import OnnxModel


@dataclass(frozen=True)
class Region:
    """One refined region: its mesh points, its crop, and which head outputs belong to it."""

    subset: np.ndarray  # mesh indices the crop box is made from (and, in order, the refined points)
    rotation_indices: tuple[int, int]
    target_rotation: float
    crop_size: tuple[int, int]  # (width, height) the matrix maps from
    crop_scale: tuple[float, float]
    landmark_scale: float  # mesh (input pixels) -> feature-map pixels
    matrix_scale: np.ndarray  # (4, 4), elementwise, before TransformLandmarks
    outputs: tuple[str, ...]  # head output names, in the heads graph's output order


def transform_landmarks(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """MediaPipe's TransformLandmarks v2 for 2-D points: (K, 2) → (K, 2) by the matrix's x/y rows."""
    return points @ matrix[:2, :2].T + matrix[:2, 3]


class AttentionMesh:
    """The attention mesh: :meth:`run_backbone` on a (1, 3, 192, 192) float32 [0, 1] crop, then
    :meth:`refine` for its lips, eyes and irises. Keeps nothing between calls."""

    def __init__(
        self,
        backbone: str | Path,
        heads: str | Path,
        threads: int = 1,
        providers: Sequence[str] | None = None,
    ):
        self.backbone = OnnxModel(backbone, threads=threads, providers=providers)
        self.heads = OnnxModel(heads, threads=threads, providers=providers)
        spec = self._read_spec(self.heads)
        names = self.backbone.output_names
        if names[:2] != [spec["mesh"], spec["presence"]]:
            raise ValueError(f"{self.backbone.path.name}: outputs {names} do not start with mesh, face flag")
        self._features = {name: i for i, name in enumerate(names)}
        self.regions = [self._region(r) for r in spec["regions"]]
        if self.heads.input_names != [r["head_input"] for r in spec["regions"]]:
            raise ValueError(f"{self.heads.path.name}: inputs {self.heads.input_names} are not the crops")
        features = {r["feature"] for r in spec["regions"]}
        sampler_sizes = {tuple(r["sampler_size"]) for r in spec["regions"]}
        if len(features) != 1 or len(sampler_sizes) != 1:
            raise ValueError(f"{self.heads.path.name}: regions must crop one feature map at one size")
        self._feature = self._features[features.pop()]
        self._kernel_args = self._region_arrays(self.regions)
        self._matrix_scales = np.stack([r.matrix_scale for r in self.regions])
        width, height = sampler_sizes.pop()
        channels = self.heads.session.get_inputs()[0].shape[1]
        self._crop_shape = (len(self.regions), channels, height, width)
        # Reused every frame (the heads read the crops before refine returns): no per-frame allocation.
        self._matrices = np.empty((len(self.regions), 4, 4))
        self._crops = np.empty(self._crop_shape, np.float32)
        self._layout_rows()
        self._warm_up()

    def _warm_up(self) -> None:
        """Load (or compile) the numba kernels now rather than on the first tracked frame."""
        shape = self.backbone.session.get_outputs()[self._feature].shape[1:]
        features = np.zeros([int(d) for d in shape], np.float32)
        mesh = np.zeros((int(np.prod(self.backbone.session.get_outputs()[0].shape[1:])) // 3, 3), np.float32)
        matrices, crops = np.empty((len(self.regions), 4, 4)), np.empty(self._crop_shape, np.float32)
        attention_kernels.crop_regions(mesh, *self._kernel_args, features, matrices, crops)

    @staticmethod
    def _region_arrays(regions: list[Region]) -> tuple[np.ndarray, ...]:
        """The regions' parameters as the arrays :func:`attention_kernels.crop_regions` takes."""
        subsets = np.zeros((len(regions), max(len(r.subset) for r in regions)), np.int64)
        for row, region in zip(subsets, regions, strict=True):
            row[: len(region.subset)] = region.subset
        return (
            np.array([r.landmark_scale for r in regions]),
            subsets,
            np.array([len(r.subset) for r in regions], np.int64),
            np.array([r.rotation_indices for r in regions], np.int64),
            np.array([r.target_rotation for r in regions]),
            np.array([r.crop_size for r in regions], np.float64),
            np.array([r.crop_scale for r in regions], np.float64),
        )

    @staticmethod
    def _read_spec(heads: OnnxModel) -> dict:
        meta = heads.session.get_modelmeta().custom_metadata_map
        if SPEC_KEY not in meta:
            raise ValueError(f"{heads.path.name} has no {SPEC_KEY} metadata: not attention-mesh heads")
        spec = json.loads(meta[SPEC_KEY])
        if spec.get("format") != SPEC_FORMAT:
            raise ValueError(f"{heads.path.name}: spec format {spec.get('format')}, need {SPEC_FORMAT}")
        return spec

    def _region(self, spec: dict) -> Region:
        missing = [name for name in spec["outputs"].values() if name not in self.heads.output_names]
        if missing:
            raise ValueError(f"{self.heads.path.name} lacks head outputs {missing}")
        return Region(
            subset=np.array(spec["subset"], np.intp),
            rotation_indices=tuple(spec["rotation_indices"]),
            target_rotation=float(spec["target_rotation"]),
            crop_size=tuple(spec["crop_size"]),
            crop_scale=tuple(spec["crop_scale"]),
            landmark_scale=float(spec["landmark_scale"]),
            matrix_scale=np.array(spec["matrix_scale"], np.float64),
            outputs=tuple(spec["outputs"].values()),
        )

    def run_backbone(self, tensor: np.ndarray) -> tuple[np.ndarray, float, list[np.ndarray]]:
        """(468×3 mesh in input pixels, face-flag logit, backbone outputs for :meth:`refine`)."""
        outputs = self.backbone(tensor)
        mesh = np.asarray(outputs[0], np.float32).reshape(-1, 3)
        return mesh, float(np.asarray(outputs[1]).reshape(-1)[0]), outputs

    def refine(self, mesh: np.ndarray, outputs: list[np.ndarray]) -> np.ndarray:
        """All heads' points in input pixels, (K, 2), for the mesh :meth:`run_backbone` gave.

        Rows are the head outputs in :attr:`output_rows` order (region by region, as in the spec).
        """
        features = np.ascontiguousarray(outputs[self._feature][0])  # (H, W, C)
        matrices, crops = self._matrices, self._crops
        attention_kernels.crop_regions(mesh, *self._kernel_args, features, matrices, crops)
        heads = self.heads(*(crops[r : r + 1] for r in range(len(self.regions))))
        points = np.concatenate([heads[i].reshape(-1, 2) for i in self._head_order]).astype(np.float64)
        scaled = matrices * self._matrix_scales
        for rows, matrix in zip(self._region_rows, scaled, strict=True):
            points[rows] = transform_landmarks(points[rows], matrix)
        return points

    def _layout_rows(self) -> None:
        """Where each head output's points go in :meth:`refine`'s result."""
        shapes = {o.name: o.shape for o in self.heads.session.get_outputs()}
        self._head_order = []
        self._region_rows = []
        self.output_rows: dict[str, slice] = {}
        start = 0
        for region in self.regions:
            region_start = start
            for name in region.outputs:
                count = int(np.prod(shapes[name][1:])) // 2
                self.output_rows[name] = slice(start, start + count)
                self._head_order.append(self.heads.output_names.index(name))
                start += count
            self._region_rows.append(slice(region_start, start))
