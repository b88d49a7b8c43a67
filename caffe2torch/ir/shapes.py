"""Infer every blob's shape with Caffe's formulas, before any module exists."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from caffe2torch.errors import ShapeError
from caffe2torch.ir.graph import LayerNode, NetGraph, Shape
from caffe2torch.layers.registry import get_converter

PartialShape = tuple[int | None, ...]


def infer_shapes(graph: NetGraph, input_shapes: Mapping[str, Sequence[int]] | None = None) -> None:
    """Fill ``graph.blobs[*].shape``; ``input_shapes`` (blob name -> shape) overrides the file."""
    overrides = {name: tuple(int(d) for d in shape) for name, shape in (input_shapes or {}).items()}
    known_inputs = {graph.blobs[b].name for b in graph.inputs}
    unknown = sorted(set(overrides) - known_inputs)
    if unknown:
        raise ShapeError(f"{graph.definition.source}: input_shapes names {unknown}, which are not "
                         f"inputs of the net; its inputs are {sorted(known_inputs)}")
    for node in graph.layers:
        if node.role == "input":
            for top, shape in zip(node.tops, declared_input_shapes(node), strict=False):
                graph.blobs[top].shape = _input_shape(graph, node, top, shape, overrides)
            continue
        inputs = [graph.blobs[b].shape for b in node.bottoms]
        converter = get_converter(node.type)
        tops = converter.output_shapes(node, inputs)
        if len(tops) != len(node.tops):
            raise ShapeError(f"layer '{node.name}' ({node.type}): gives {len(tops)} output(s) "
                             f"but declares {len(node.tops)} top(s)")
        for top, shape in zip(node.tops, tops, strict=True):
            graph.blobs[top].shape = tuple(int(d) for d in shape)
        _setup_checks(graph, node, converter, inputs)
        for blob_id in node.alias_tops:
            _alias_shape(graph, node, blob_id)


def _setup_checks(graph: NetGraph, node: LayerNode, converter, inputs) -> None:
    """Caffe's CHECKs common to every layer (Layer::SetUp, Net::AppendParam) and its rule that
    an in-place layer keeps the blob's shape (its Reshape would resize the bottom it reads)."""
    where = f"layer '{node.name}' ({node.type})"
    p = node.param
    if len(p.loss_weight) and len(p.loss_weight) != len(p.top):
        raise ShapeError(f"{where}: {len(p.loss_weight)} loss_weight values for {len(p.top)} "
                         "top(s); Caffe requires none or exactly one per top")
    if len(p.param):
        blobs = len(converter.blob_shapes(node, inputs))
        if len(p.param) > blobs:
            raise ShapeError(f"{where}: {len(p.param)} param {{ }} entries but the layer has "
                             f"{blobs} parameter blob(s); Caffe refuses this ('Too many params "
                             "specified')")
    for slot, top in enumerate(node.tops):
        if slot < len(p.bottom) and p.bottom[slot] == p.top[slot]:
            before, after = graph.blobs[node.bottoms[slot]].shape, graph.blobs[top].shape
            if before != after:
                raise ShapeError(f"{where}: is in place on '{p.top[slot]}' but changes its shape "
                                 f"{before} to {after}; Caffe reshapes the shared blob before "
                                 "the layer reads it, so it refuses or computes garbage")


def _alias_shape(graph: NetGraph, node: LayerNode, blob_id: str) -> None:
    """A blob sharing memory with an in-place top keeps its own shape, and must keep its size."""
    written, previous = graph.blobs[blob_id].alias_of  # type: ignore[misc]
    shape, source = graph.blobs[previous].shape, graph.blobs[written].shape
    if shape is None or source is None or _count(shape) != _count(source):
        raise ShapeError(
            f"layer '{node.name}' ({node.type}): writes '{graph.blobs[written].name}' in place "
            f"with shape {source}, but '{graph.blobs[blob_id].name}' shares its memory with "
            f"shape {shape}; an in-place write must keep the blob's size")
    graph.blobs[blob_id].shape = shape


def _count(shape: Shape) -> int:
    total = 1
    for d in shape:
        total *= d
    return total


def _input_shape(graph: NetGraph, node: LayerNode, top: str, declared: PartialShape,
                 overrides: dict[str, Shape]) -> Shape:
    name = graph.blobs[top].name
    if name in overrides:
        return overrides[name]
    if declared and all(d is not None and d > 0 for d in declared):
        return tuple(int(d) for d in declared)  # type: ignore[arg-type]
    shown = "(" + ", ".join("?" if d is None else str(d) for d in declared) + ")" \
        if declared else "no shape"
    raise ShapeError(
        f"{graph.definition.source}: input '{name}' of layer '{node.name}' ({node.type}) has "
        f"{shown} in the file; pass its full shape, e.g. input_shapes={{'{name}': (N, C, H, W)}} "
        f"(--input-shape {name}=N,C,H,W on the command line)")


def declared_input_shapes(node: LayerNode) -> list[PartialShape]:
    """What the file says about each top's shape; ``None`` marks what only the caller knows."""
    p = node.param
    n = len(p.top)
    if node.type == "Input":
        shapes = [tuple(s.dim) for s in p.input_param.shape]
        if len(shapes) == 1 and n > 1:
            shapes = shapes * n
        return shapes + [()] * (n - len(shapes))
    if node.type == "DummyData":
        return _dummy_data_shapes(node)
    return [_data_shape(node)] + [_label_shape(node)] * (n - 1)


def _dummy_data_shapes(node: LayerNode) -> list[PartialShape]:
    d = node.param.dummy_data_param
    n = len(node.param.top)
    if len(d.shape):
        shapes = [tuple(s.dim) for s in d.shape]
    else:
        shapes = [tuple(x) for x in zip(d.num, d.channels, d.height, d.width, strict=False)]
    if len(shapes) == 1:
        shapes = shapes * n
    return shapes + [()] * (n - len(shapes))


def _data_shape(node: LayerNode) -> PartialShape:
    p = node.param
    crop = p.transform_param.crop_size or None
    if node.type == "Data":
        return (p.data_param.batch_size or None, None, crop, crop)
    if node.type == "ImageData":
        q = p.image_data_param
        channels = 3 if q.is_color else 1
        return (q.batch_size, channels, crop or q.new_height or None, crop or q.new_width or None)
    if node.type == "MemoryData":
        q = p.memory_data_param
        return (q.batch_size, q.channels, crop or q.height, crop or q.width)
    if node.type == "WindowData":
        q = p.window_data_param
        return (q.batch_size, 3, crop, crop)
    if node.type == "HDF5Data":
        return (p.hdf5_data_param.batch_size or None, None, None, None)
    return ()


def _label_shape(node: LayerNode) -> PartialShape:
    shape = _data_shape(node)
    return (shape[0],) if shape else ()
