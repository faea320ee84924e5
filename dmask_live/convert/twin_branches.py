"""Merge twin branches of an ONNX graph into one branch with both channel sets side by side.

MediaPipe's iris network ends in two heads (eye contour, iris) of identical structure and shape,
both fed by one feature map; the face mesh ends in two short ones (landmarks, face flag). At 8x8
to 2x2 pixels their tiny nodes cost more in per-node overhead than in arithmetic. Two nodes of
the same kind whose inputs are the *same* tensor, already merged twins, or two independent tensors
of one shape ("side by side", joined by a Concat) become one node over the channel concatenation
[first; second]:

- Conv on a shared input (group 1): weights and biases concatenated along the output axis;
- Conv on merged twins: a grouped Conv (groups add up; each half only sees its own channels);
- BatchNormalization: parameters concatenated; Relu, MaxPool: unchanged (per channel);
- Add of merged twins, or of twins and one shared tensor (which is then Concat-ed with itself).

Merges start from pairs of Convs with weights of the same shape and follow their consumers; a
start that yields fewer than ``MIN_MERGED_NODES`` pairs is undone.

Every value is computed by the same arithmetic as before (grouped convolution keeps the halves
apart), so results are unchanged. A merged tensor that is still needed alone (a graph output or
a consumer that has no twin) is cut back out with a Slice.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

_PER_CHANNEL = {"Relu", "MaxPool"}
_MERGEABLE = {"Conv", "BatchNormalization", "Add", *_PER_CHANNEL}
# Twins shorter than this are left alone: merging them saves little and costs Slices to undo.
MIN_MERGED_NODES = 8


class _CycleError(ValueError):
    pass


class _Graph:
    """Index of an ONNX graph: producers, consumers, initializers."""

    def __init__(self, graph: onnx.GraphProto, shapes: dict[str, tuple]) -> None:
        self.graph = graph
        self.nodes = list(graph.node)  # one Python object per node for the whole merge (ids are keys)
        self.initializers = {init.name: init for init in graph.initializer}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.nodes:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {out.name for out in graph.output}
        self._used = {name for node in graph.node for name in (*node.input, *node.output, node.name)}
        self._used |= set(self.initializers)
        self.shapes = shapes
        self.upstream: dict[str, frozenset[int]] = {}  # tensor -> id() of every node it depends on
        for node in self.nodes:  # ONNX graphs are in topological order
            above = set().union(*(self.upstream.get(name, frozenset()) for name in node.input))
            for name in node.output:
                self.upstream[name] = frozenset(above | {id(node)})

    def array(self, name: str) -> np.ndarray | None:
        init = self.initializers.get(name)
        return None if init is None else numpy_helper.to_array(init)

    def unique(self, base: str) -> str:
        name, counter = base, 0
        while name in self._used:
            counter += 1
            name = f"{base}_{counter}"
        self._used.add(name)
        return name


def merge_twin_branches(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with twin branches merged (a new model; the input is not modified)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except onnx.shape_inference.InferenceError:  # unknown shapes: only twins on one shared tensor
        inferred = model
    values = (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)
    shapes = {value.name: _shape(value) for value in values}
    for side_by_side in (True, False):
        merged = onnx.ModelProto()
        merged.CopyFrom(model)
        try:
            _Merger(_Graph(merged.graph, shapes), side_by_side).run()
        except _CycleError:  # twins that feed each other: try again with fewer kinds of twins
            continue
        used = {name for node in merged.graph.node for name in node.input}
        kept = [init for init in merged.graph.initializer if init.name in used]  # also drops undone merges
        del merged.graph.initializer[:]
        merged.graph.initializer.extend(kept)
        return merged
    return model


class _Merger:
    def __init__(self, index: _Graph, side_by_side: bool) -> None:
        self.g = index
        self.side_by_side = side_by_side  # also twins reading two different tensors (then concatenated)
        self.apart_now = True
        self.pairs: dict[tuple[str, str], tuple[str, int]] = {}  # (first, second) -> (merged, first channels)
        self.merged_nodes: set[int] = set()  # id() of original nodes replaced by a merged node
        self.new_nodes: list[onnx.NodeProto] = []
        self.concats: dict[tuple[str, str], str] = {}

    # ---- driver ---------------------------------------------------------------------------------
    def run(self) -> None:
        for node_a, node_b in self._seeds():
            if id(node_a) not in self.merged_nodes and id(node_b) not in self.merged_nodes:
                self._grow(node_a, node_b)
        if self.pairs:
            self._rewrite()

    def _grow(self, seed_a: onnx.NodeProto, seed_b: onnx.NodeProto) -> None:
        """Merge a seed pair and everything downstream that pairs up; undo it if that is little."""
        saved = (dict(self.pairs), set(self.merged_nodes), len(self.new_nodes), dict(self.concats))
        if not self._merge(seed_a, seed_b):
            return
        # Twins on merged inputs first: a tensor pair must not be concatenated ("apart") when its
        # producers are twins themselves that merge a step later.
        while self._grow_step(apart=False) or self.side_by_side and self._grow_step(apart=True):
            pass
        if len(self.pairs) - len(saved[0]) < MIN_MERGED_NODES:  # e.g. two halves of one split conv
            self.pairs, self.merged_nodes, self.concats = saved[0], saved[1], saved[3]
            del self.new_nodes[saved[2]:]

    def _grow_step(self, apart: bool) -> bool:
        """Merge every pair of consumers of merged twins that pairs up; True if any did."""
        self.apart_now = apart
        progress = False
        for first, second in list(self.pairs):
            for node_a in list(self.g.consumers.get(first, [])):
                for node_b in self.g.consumers.get(second, []):
                    if id(node_a) in self.merged_nodes or id(node_b) in self.merged_nodes:
                        continue
                    if self._merge(node_a, node_b):
                        progress = True
                        break
        self.apart_now = True
        return progress

    def _seeds(self) -> list[tuple[onnx.NodeProto, onnx.NodeProto]]:
        """Pairs of group-1 Convs with weights of the same shape: on one tensor first, then on two."""
        convs = [n for n in self.g.nodes if n.op_type == "Conv" and _attr(n, "group", 1) == 1]
        same, apart = [], []
        for i, node_a in enumerate(convs):
            for node_b in convs[i + 1:]:
                if not self._same_params(node_a, node_b):
                    continue
                if node_a.input[0] == node_b.input[0]:
                    same.append((node_a, node_b))
                elif self.side_by_side and self._input_kind(node_a.input[0], node_b.input[0], node_a, node_b):
                    apart.append((node_a, node_b))
        return same + apart

    # ---- matching -------------------------------------------------------------------------------
    def _same_params(self, node_a: onnx.NodeProto, node_b: onnx.NodeProto) -> bool:
        if node_a.op_type != node_b.op_type or node_a.op_type not in _MERGEABLE:
            return False
        if len(node_a.input) != len(node_b.input) or len(node_a.output) != 1 or len(node_b.output) != 1:
            return False
        if _attrs(node_a) != _attrs(node_b):
            return False
        for name_a, name_b in zip(node_a.input[1:], node_b.input[1:], strict=True):
            array_a, array_b = self.g.array(name_a), self.g.array(name_b)
            if node_a.op_type in ("Conv", "BatchNormalization"):
                if array_a is None or array_b is None or array_a.shape != array_b.shape:
                    return False
        return True

    def _input_kinds(self, node_a: onnx.NodeProto, node_b: onnx.NodeProto) -> list[str] | None:
        """Per activation input: 'pair' (merged twins), 'shared' (one tensor), 'apart' (two tensors)."""
        count = 1 if node_a.op_type in ("Conv", "BatchNormalization") else len(node_a.input)
        names = zip(node_a.input[:count], node_b.input[:count], strict=True)
        kinds = [self._input_kind(a, b, node_a, node_b) for a, b in names]
        return None if None in kinds else kinds

    def _input_kind(self, name_a: str, name_b: str, node_a, node_b) -> str | None:
        if (name_a, name_b) in self.pairs:
            return "pair"
        if name_a in self.g.initializers or name_b in self.g.initializers:
            return None
        if name_a == name_b:
            return "shared"
        shape_a, shape_b = self.g.shapes.get(name_a), self.g.shapes.get(name_b)
        upstream_a, upstream_b = self.g.upstream.get(name_a, ()), self.g.upstream.get(name_b, ())
        independent = id(node_b) not in upstream_a and id(node_a) not in upstream_b
        if self.side_by_side and self.apart_now and shape_a and shape_a == shape_b and len(shape_a) == 4 \
                and independent:
            return "apart"
        return None

    def _merge(self, node_a: onnx.NodeProto, node_b: onnx.NodeProto) -> bool:
        if node_a is node_b or not self._same_params(node_a, node_b):
            return False
        kinds = self._input_kinds(node_a, node_b)
        if kinds is None or "pair" not in kinds and node_a.op_type != "Conv":  # seeds are Convs
            return False
        builder = getattr(self, f"_merge_{node_a.op_type.lower()}")
        result = builder(node_a, node_b, kinds)
        if result is None:
            return False
        node, channels = result
        self.new_nodes.append(node)
        self.pairs[(node_a.output[0], node_b.output[0])] = (node.output[0], channels)
        self.merged_nodes.update((id(node_a), id(node_b)))
        return True

    # ---- merged nodes ---------------------------------------------------------------------------
    def _merged_name(self, node_a: onnx.NodeProto) -> str:
        return self.g.unique(f"{node_a.output[0]}__twins")

    def _activation(self, name_a: str, name_b: str, kind: str) -> str:
        """The merged input: a merged tensor, or a Concat of [a; b] (a shared tensor: [t; t])."""
        if kind == "pair":
            return self.pairs[(name_a, name_b)][0]
        if (name_a, name_b) not in self.concats:
            joined = self.g.unique(f"{name_a}__twice" if name_a == name_b else f"{name_a}__beside")
            self.new_nodes.append(helper.make_node("Concat", [name_a, name_b], [joined], axis=1,
                                                   name=self.g.unique("Concat_twins")))
            self.concats[(name_a, name_b)] = joined
        return self.concats[(name_a, name_b)]

    def _concat_params(self, node_a: onnx.NodeProto, node_b: onnx.NodeProto) -> list[str]:
        names = []
        for name_a, name_b in zip(node_a.input[1:], node_b.input[1:], strict=True):
            joined = np.concatenate([self.g.array(name_a), self.g.array(name_b)])
            name = self.g.unique(f"{name_a}__twins")
            self.g.graph.initializer.append(numpy_helper.from_array(joined, name))
            self.g.initializers[name] = self.g.graph.initializer[-1]
            names.append(name)
        return names

    def _merge_conv(self, node_a, node_b, kinds):
        group = _attr(node_a, "group", 1)
        if kinds == ["shared"]:
            if group != 1:
                return None
            merged_group = 1
        else:
            merged_group = 2 * group
        attrs = _attrs(node_a)
        attrs["group"] = merged_group
        shared = kinds == ["shared"]
        source = node_a.input[0] if shared else self._activation(node_a.input[0], node_b.input[0], kinds[0])
        inputs = [source, *self._concat_params(node_a, node_b)]
        out = self._merged_name(node_a)
        node = helper.make_node("Conv", inputs, [out], name=self.g.unique("Conv_twins"), **attrs)
        return node, int(self.g.array(node_a.input[1]).shape[0])

    def _merge_batchnormalization(self, node_a, node_b, kinds):
        source = self._activation(node_a.input[0], node_b.input[0], kinds[0])
        inputs = [source, *self._concat_params(node_a, node_b)]
        name = self.g.unique("BatchNormalization_twins")
        node = helper.make_node("BatchNormalization", inputs, [self._merged_name(node_a)], name=name,
                                **_attrs(node_a))
        return node, int(self.g.array(node_a.input[1]).shape[0])

    def _per_channel(self, node_a, node_b, kinds):
        source = (node_a.input[0], node_b.input[0])
        inputs = [self._activation(*source, kinds[0])]
        out = self._merged_name(node_a)
        node = helper.make_node(node_a.op_type, inputs, [out], name=self.g.unique(f"{node_a.op_type}_twins"),
                                **_attrs(node_a))
        return node, self.pairs[source][1]

    _merge_relu = _per_channel
    _merge_maxpool = _per_channel

    def _merge_add(self, node_a, node_b, kinds):
        operands = list(zip(node_a.input, node_b.input, kinds, strict=True))
        inputs = [self._activation(a, b, kind) for a, b, kind in operands]
        channels = next(self.pairs[(a, b)][1] for a, b, kind in operands if kind == "pair")
        out = self._merged_name(node_a)
        return helper.make_node("Add", inputs, [out], name=self.g.unique("Add_twins")), channels

    # ---- rewriting ------------------------------------------------------------------------------
    def _rewrite(self) -> None:
        graph = self.g.graph
        kept = [node for node in self.g.nodes if id(node) not in self.merged_nodes]
        slices = self._slices_for_leftover_uses(kept)
        inputs = [value.name for value in graph.input]
        nodes = _topological([*kept, *self.new_nodes, *slices], inputs, self.g.initializers)
        del graph.node[:]
        graph.node.extend(nodes)

    def _slices_for_leftover_uses(self, kept: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
        """Slice a half back out wherever an original (now merged) tensor is still read."""
        needed = {name for node in (*kept, *self.new_nodes) for name in node.input} | self.g.outputs
        slices = []
        for (first, second), (merged, channels) in self.pairs.items():
            for name, (start, end) in ((first, (0, channels)), (second, (channels, 2 * channels))):
                if name not in needed:
                    continue
                bounds = [self._int_const(f"{name}__start", start), self._int_const(f"{name}__end", end),
                          self._int_const(f"{name}__axis", 1)]
                node_name = self.g.unique("Slice_twins")
                slices.append(helper.make_node("Slice", [merged, *bounds], [name], name=node_name))
        return slices

    def _int_const(self, base: str, value: int) -> str:
        name = self.g.unique(base)
        self.g.graph.initializer.append(numpy_helper.from_array(np.array([value], np.int64), name))
        self.g.initializers[name] = self.g.graph.initializer[-1]
        return name


def _shape(value: onnx.ValueInfoProto) -> tuple:
    dims = value.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims)


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _attr(node: onnx.NodeProto, name: str, default):
    return _attrs(node).get(name, default)


def _topological(nodes: list[onnx.NodeProto], inputs: list[str], initializers) -> list[onnx.NodeProto]:
    """``nodes`` in an order where every input is produced first (stable: earlier nodes first)."""
    available = set(inputs) | set(initializers) | {""}
    pending = list(nodes)
    ordered: list[onnx.NodeProto] = []
    while pending:
        ready = [node for node in pending if all(name in available for name in node.input)]
        if not ready:
            raise _CycleError("merging twin branches produced a cycle")
        ready_ids = {id(node) for node in ready}
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        pending = [node for node in pending if id(node) not in ready_ids]
    return ordered
