"""The SSD fork's layers (weiliu89/caffe, branch ``ssd``): PriorBox, DetectionOutput, Normalize,
Permute. Formulas and CHECKs from that fork's ``src/caffe/layers/{prior_box,detection_output,
normalize,permute}_layer.cpp`` (the CPU code) and ``src/caffe/util/bbox_util.cpp``.

PriorBox, the FaceBoxes variant: sfzhang15/FaceBoxes' ``prior_box_layer.cpp`` computes other
priors from the same parameters: a min_size of 32 gives 4 x 4 boxes per cell (centres shifted
by 8 pixels), 64 gives 2 x 2 (shifted by 16), every square min-size box has side
``min_size - 1``, and a layer with three min sizes has 21 priors per cell. A prototxt cannot
tell which fork it was written for, so the variant is chosen explicitly, never guessed:
``build(..., variants={"PriorBox": "faceboxes"})`` (``--variant PriorBox=faceboxes``), or
``prior_box_param { faceboxes_dense_anchors: true }`` (a field of our own) in a PriorBox layer.
Without either such a net fails at its DetectionOutput, whose error says so.

DetectionOutput's top has one row per detection, a number only the values decide: its inferred
shape is Caffe's at net set-up, (1, 1, 1, 7) (``data_dependent``); the module returns Caffe's
run-time top (1, 1, R, 7). Its NMS is data-dependent Python, so nets with it do not export to
ONNX / TorchScript / .pt2 (``traceable``); ``save_output_param`` and ``visualize`` (files and
windows Caffe writes on the side) do not change the top and are ignored.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from caffe2torch.ir.graph import LayerNode
from caffe2torch.layers._common import expect_bottoms
from caffe2torch.layers.registry import Converter, register_converter, shape_error
from caffe2torch.modules.ssd import DetectionOutput, Normalize, Permute, PriorBox, priors_per_cell

Shape = tuple[int, ...]
ORIGIN = "SSD (weiliu89/caffe)"
#: FaceBoxes' densified min sizes: size -> (boxes per side, centre interval in pixels).
FACEBOXES_DENSE = {32: (4, 8), 64: (2, 16)}


def _legacy(shape: Sequence[int], index: int) -> int:
    """Blob::LegacyShape: axis ``index`` (num, channels, height, width), 1 past the last."""
    return int(shape[index]) if index < len(shape) else 1


# ----------------------------------------------------------------------------- PriorBox


def _aspect_ratios(p) -> list[float]:
    """LayerSetUp's list: 1, then each new ratio (and 1/ratio with flip), in float."""
    ratios = [1.0]
    for ar in p.aspect_ratio:
        if all(abs(ar - r) >= 1e-6 for r in ratios):
            ratios.append(ar)
            if p.flip:
                ratios.append(float(np.float32(1.0 / ar)))
    return ratios


def _check_prior_box(layer: LayerNode) -> None:
    p = layer.param.prior_box_param
    if not p.min_size:
        raise shape_error(layer, "prior_box_param has no min_size; expected at least one")
    for name, values in (("min_size", p.min_size), ("variance", p.variance)):
        bad = [v for v in values if not v > 0]
        if bad:
            raise shape_error(layer, f"{name} {bad[0]:g}; expected > 0")
    bad = [v for v in p.aspect_ratio if not 0 < v < math.inf]
    if bad:  # Caffe has no CHECK here: its boxes of side min_size * sqrt(ratio) are inf or NaN
        raise shape_error(layer, f"aspect_ratio {bad[0]:g}; expected a finite ratio > 0")
    if p.max_size and len(p.max_size) != len(p.min_size):
        raise shape_error(layer, f"{len(p.max_size)} max_size for {len(p.min_size)} min_size; "
                                 "expected as many")
    for low, high in zip(p.min_size, p.max_size):
        if not high > low:
            raise shape_error(layer, f"max_size {high:g} <= min_size {low:g}; expected greater")
    if len(p.variance) not in (0, 1, 4):
        raise shape_error(layer, f"{len(p.variance)} variance values; expected 1 or 4")
    for one, pair in (("img_size", ("img_h", "img_w")), ("step", ("step_h", "step_w"))):
        given = [f for f in pair if p.HasField(f)]
        if given and p.HasField(one):
            raise shape_error(layer, f"sets {one} and {given[0]}; expected either {one} or "
                                     f"{pair[0]}/{pair[1]}, not both")
        if given and not all(getattr(p, f) > 0 for f in pair):
            raise shape_error(layer, f"{pair[0]} {getattr(p, pair[0]):g}, {pair[1]} "
                                     f"{getattr(p, pair[1]):g}; expected both > 0")
        if p.HasField(one) and not getattr(p, one) > 0:
            raise shape_error(layer, f"{one} {getattr(p, one):g}; expected > 0")


def _priors(layer: LayerNode) -> list[tuple[float, float, float, float]]:
    p = layer.param.prior_box_param
    ratios = _aspect_ratios(p)
    dense = FACEBOXES_DENSE if p.faceboxes_dense_anchors or layer.variant == "faceboxes" \
        else None
    priors = priors_per_cell(list(p.min_size), list(p.max_size), ratios, dense)
    if dense is not None:  # the fork's count, which its loop must fill exactly
        declared = (21 if len(p.min_size) == 3 else len(ratios) * len(p.min_size)) \
            + len(p.max_size)
        if declared != len(priors):
            raise shape_error(layer, f"faceboxes_dense_anchors: these sizes and ratios make "
                                     f"{len(priors)} priors per cell where FaceBoxes' PriorBox "
                                     f"allocates {declared}; expected the FaceBoxes layouts "
                                     "(min sizes 32, 64, 128 alone, or other sizes)")
    return priors


def _image_and_step(p) -> tuple[tuple[int, int], tuple[float, float]]:
    if p.HasField("img_h") or p.HasField("img_w"):
        image = (p.img_h, p.img_w)
    else:
        image = (p.img_size, p.img_size)
    if p.HasField("step_h") or p.HasField("step_w"):
        step = (p.step_h, p.step_w)
    else:
        step = (p.step, p.step)
    return image, step


@register_converter
class PriorBoxConverter(Converter):
    """Bottoms: the feature map and the image (its size unless img_size/img_h/img_w give it);
    top (1, 2, H * W * priors * 4): every prior's (xmin, ymin, xmax, ymax), then its variances."""

    caffe_type = "PriorBox"
    origin = ORIGIN
    variants = {"faceboxes": "sfzhang15/FaceBoxes' densified priors"}
    limits = ("the FaceBoxes variant only when chosen: variants={'PriorBox': 'faceboxes'} "
              "(--variant PriorBox=faceboxes), or faceboxes_dense_anchors: true (our own field)")

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1, 2)
        _check_prior_box(layer)
        image, _ = _image_and_step(layer.param.prior_box_param)
        if 0 in image and len(inputs) < 2:
            raise shape_error(layer, "has 1 bottom and no img_size/img_h/img_w; expected the "
                                     "image as bottom 1")
        for i, shape in enumerate(inputs):
            if len(shape) > 4:
                raise shape_error(layer, f"bottom {i} has {len(shape)} axes; expected at most 4")
        size = _legacy(inputs[0], 2) * _legacy(inputs[0], 3) * len(_priors(layer)) * 4
        if size <= 0:
            raise shape_error(layer, f"bottom 0 {tuple(inputs[0])} gives no priors; expected "
                                     "a feature map of positive height and width")
        return [(1, 2, size)]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> PriorBox:
        p = layer.param.prior_box_param
        image, step = _image_and_step(p)
        return PriorBox(_priors(layer), list(p.variance) or [0.1], image, step, p.offset,
                        p.clip)


# ----------------------------------------------------------------------------- DetectionOutput


@register_converter
class DetectionOutputConverter(Converter):
    """Bottoms: loc (N, P * L * 4), conf (N, P * classes), priors (1, 2, P * 4); top
    (1, 1, R, 7) rows [image, label, score, xmin, ymin, xmax, ymax] (see the module)."""

    caffe_type = "DetectionOutput"
    origin = ORIGIN
    data_dependent = True
    traceable = False
    trace_limit = ("its output row count depends on the scores (per-class greedy NMS in a "
                   "Python loop), which ONNX / TorchScript / .pt2 cannot trace")
    limits = ("a static top size: inferred (1, 1, 1, 7), Caffe's set-up shape; the run-time "
              "rows follow the detections. No ONNX / TorchScript / .pt2 export (NMS)")

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 3, 4)
        p = layer.param.detection_output_param
        if not p.HasField("num_classes"):
            raise shape_error(layer, "detection_output_param has no num_classes; expected it")
        nms = p.nms_param
        if not nms.nms_threshold >= 0:
            raise shape_error(layer, f"nms_threshold {nms.nms_threshold:g}; expected >= 0")
        if not 0 < nms.eta <= 1:
            raise shape_error(layer, f"eta {nms.eta:g}; expected 0 < eta <= 1")
        if p.share_location and p.background_label_id == -1:
            raise shape_error(layer, "background_label_id -1 with share_location: Caffe "
                                     "aborts there (the shared boxes have label -1, which it "
                                     "skips as background); expected another label id")
        loc, conf, prior = (tuple(s) for s in inputs[:3])
        if _legacy(loc, 0) != _legacy(conf, 0):
            raise shape_error(layer, f"loc {loc} and conf {conf} have other batch sizes; "
                                     "expected the same")
        num_priors = _legacy(prior, 2) // 4
        loc_classes = 1 if p.share_location else p.num_classes
        if num_priors * loc_classes * 4 != _legacy(loc, 1):
            raise shape_error(layer, f"loc {loc} has {_legacy(loc, 1)} values per image for "
                                     f"{num_priors} priors; expected {num_priors} * "
                                     f"{loc_classes} * 4 = {num_priors * loc_classes * 4}"
                                     + _faceboxes_hint(_legacy(loc, 1), num_priors * loc_classes
                                                       * 4))
        if num_priors * p.num_classes != _legacy(conf, 1):
            raise shape_error(layer, f"conf {conf} has {_legacy(conf, 1)} values per image for "
                                     f"{num_priors} priors; expected {num_priors} * "
                                     f"{p.num_classes} = {num_priors * p.num_classes}")
        return [(1, 1, 1, 7)]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> DetectionOutput:
        p = layer.param.detection_output_param
        nms = p.nms_param
        threshold = p.confidence_threshold if p.HasField("confidence_threshold") \
            else -float(np.finfo(np.float32).max)
        return DetectionOutput(
            p.num_classes, share_location=p.share_location,
            background_label_id=p.background_label_id, code_type=p.code_type,
            variance_encoded_in_target=p.variance_encoded_in_target, keep_top_k=p.keep_top_k,
            confidence_threshold=threshold, nms_threshold=nms.nms_threshold, eta=nms.eta,
            top_k=nms.top_k if nms.HasField("top_k") else -1)


def _faceboxes_hint(have: int, want: int) -> str:
    if have <= want:
        return ""
    return ("; a FaceBoxes net (sfzhang15/FaceBoxes) makes more priors per cell: build it "
            "with variants={'PriorBox': 'faceboxes'} (--variant PriorBox=faceboxes on the "
            "command line), or set prior_box_param { faceboxes_dense_anchors: true } in its "
            "PriorBox layers")


# ----------------------------------------------------------------------------- Normalize


@register_converter
class NormalizeConverter(Converter):
    """Bottom (N, C, ...); one blob: the scale, a single value (channel_shared) or (C,)."""

    caffe_type = "Normalize"
    origin = ORIGIN
    param_field = "norm_param"

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1)
        if not 2 <= len(inputs[0]) <= 4:
            raise shape_error(layer, f"input shape {tuple(inputs[0])}; expected 2 to 4 axes "
                                     "(N, C, ...)")
        return [tuple(inputs[0])]

    def blob_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        return [() if layer.param.norm_param.channel_shared else (inputs[0][1],)]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Normalize:
        p = layer.param.norm_param
        module = Normalize(inputs[0][1], p.across_spatial, p.channel_shared, p.eps)
        filler = p.scale_filler if p.HasField("scale_filler") else None
        if filler is None or filler.type == "constant":
            module.weight.data.fill_(filler.value if filler is not None else 1.0)
        return module

    def random_blobs(self, layer: LayerNode, inputs: Sequence[Shape],
                     rng: np.random.Generator) -> list[np.ndarray]:
        shape = self.blob_shapes(layer, inputs)[0]
        return [rng.uniform(0.5, 20.0, shape).astype(np.float32)]


# ----------------------------------------------------------------------------- Permute


@register_converter
class PermuteConverter(Converter):
    """Top: the bottom's axes in ``order``, the axes it does not name appended in order."""

    caffe_type = "Permute"
    origin = ORIGIN

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1)
        shape = tuple(inputs[0])
        order = _permute_order(layer, len(shape))
        return [tuple(shape[a] for a in order)]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Permute:
        return Permute(_permute_order(layer, len(inputs[0])))


def _permute_order(layer: LayerNode, num_axes: int) -> list[int]:
    order: list[int] = []
    for axis in layer.param.permute_param.order:
        if axis >= num_axes:
            raise shape_error(layer, f"order {axis} for a {num_axes}-D input; expected "
                                     f"< {num_axes}")
        if axis in order:
            raise shape_error(layer, f"order repeats axis {axis}; expected each axis once")
        order.append(axis)
    return order + [a for a in range(num_axes) if a not in order]
