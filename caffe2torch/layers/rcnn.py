"""Two-stage detector layers: ROIPooling, PSROIPooling, Proposal and py-faster-rcnn's Python
ProposalLayer.

- ROIPooling: Fast R-CNN (rbgirshick/caffe-fast-rcnn, src/caffe/layers/roi_pooling_layer.cpp).
- PSROIPooling: R-FCN (daijifeng001/caffe-rfcn, src/caffe/layers/psroi_pooling_layer.cu; the
  build-caffe.sh fork, inisis/caffe, has the same kernel and no CPU forward).
- Proposal: inisis/caffe (src/caffe/layers/proposal_layer.cpp, src/caffe/util/nms.cpp).
- Python ``rpn.proposal_layer.ProposalLayer``: rbgirshick/py-faster-rcnn (lib/rpn/proposal_layer.py,
  generate_anchors.py, lib/fast_rcnn/bbox_transform.py, lib/nms/nms_kernel.cu) with the TEST
  settings of lib/fast_rcnn/config.py. Other Python layers are reported unsupported.

The proposal layers' row counts depend on the scores (``data_dependent``): the inferred axis 0
is an upper bound (``post_nms_topn`` rows per image). Their NMS is a data-dependent loop, so a
net holding one does not export to ONNX / TorchScript / .pt2 (``traceable``); ``.py`` and
``.caffemodel`` exports work.
"""
from __future__ import annotations

import ast
from collections.abc import Sequence

import numpy as np

from caffe2torch.ir.graph import LayerNode
from caffe2torch.layers._common import count, expect_bottoms
from caffe2torch.layers.registry import Converter, register_converter, shape_error
from caffe2torch.modules.rcnn import Proposal, PSROIPooling, PyFasterRCNNProposal, ROIPooling

Shape = tuple[int, ...]

#: Why a net with a proposal layer does not export to ONNX / TorchScript / .pt2.
PROPOSAL_TRACE_LIMIT = (
    "its output row count depends on the scores (Caffe's sort and greedy NMS run in a Python "
    "loop), which ONNX / TorchScript / .pt2 cannot trace")


def _rois_count(layer: LayerNode, rois: Shape) -> int:
    if len(rois) < 1 or count(rois, 1) != 5:
        raise shape_error(layer, f"the rois (bottom 1) have shape {tuple(rois)}; expected "
                                 "(R, 5): rows (batch index, x1, y1, x2, y2)")
    return rois[0]


def _feature_map(layer: LayerNode, shape: Shape) -> None:
    if len(shape) != 4:
        raise shape_error(layer, f"the features (bottom 0) have shape {tuple(shape)}; "
                                 "expected 4 axes (N, C, H, W)")


def caffe_anchors(base_size: int, ratios, scales) -> np.ndarray:
    """inisis/caffe proposal_layer.cpp's anchors (A, 4), ratio-major: a box of area base_size^2
    of each ratio h/w, scaled to ``ROUND(w * scale / base_size - 1) + 1`` wide."""
    base_area = np.float32(base_size * base_size)
    center = np.float32(0.5) * np.float32(base_size - 1)
    anchors = []
    for ratio in np.asarray(ratios, dtype=np.float32):
        ratio_w = np.float32(np.sqrt(np.float32(base_area / ratio)))
        ratio_h = np.float32(ratio_w * ratio)
        for scale in np.asarray(scales, dtype=np.float32):
            half_w = 0.5 * int(float(np.float32(ratio_w * scale)) / base_size - 1 + 0.5)
            half_h = 0.5 * int(float(np.float32(ratio_h * scale)) / base_size - 1 + 0.5)
            anchors.append([center - half_w, center - half_h, center + half_w, center + half_h])
    return np.asarray(anchors, dtype=np.float32).reshape(-1, 4)


def py_faster_rcnn_anchors(base_size: int = 16, ratios=(0.5, 1, 2), scales=(8, 16, 32)
                           ) -> np.ndarray:
    """py-faster-rcnn's generate_anchors (float64): widths ``round(sqrt(size / ratio))``
    (numpy rounds halves to even), heights ``round(w * ratio)``, each times every scale."""
    size = float(base_size * base_size)
    ctr = 0.5 * (base_size - 1)
    anchors = []
    for ratio in ratios:
        w = np.round(np.sqrt(size / ratio))
        h = np.round(w * ratio)
        for scale in scales:
            ws, hs = w * scale, h * scale
            anchors.append([ctr - 0.5 * (ws - 1), ctr - 0.5 * (hs - 1),
                            ctr + 0.5 * (ws - 1), ctr + 0.5 * (hs - 1)])
    return np.asarray(anchors, dtype=np.float64).reshape(-1, 4)



@register_converter
class ROIPoolingConverter(Converter):
    """Bottoms: features (N, C, H, W), rois (R, 5); top (R, C, pooled_h, pooled_w)."""

    caffe_type = "ROIPooling"
    origin = "Fast R-CNN (rbgirshick/caffe-fast-rcnn)"
    param_field = "roi_pooling_param"

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 2)
        p = layer.param.roi_pooling_param
        if p.pooled_h <= 0 or p.pooled_w <= 0:
            raise shape_error(layer, f"pooled_h {p.pooled_h} and pooled_w {p.pooled_w}; "
                                     "expected both > 0")
        _feature_map(layer, inputs[0])
        return [(_rois_count(layer, inputs[1]), inputs[0][1], p.pooled_h, p.pooled_w)]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> ROIPooling:
        p = layer.param.roi_pooling_param
        return ROIPooling(p.pooled_h, p.pooled_w, p.spatial_scale)


@register_converter
class PSROIPoolingConverter(Converter):
    """Bottoms: score maps (N, output_dim * g * g, H, W), rois (R, 5); top (R, output_dim, g, g)."""

    caffe_type = "PSROIPooling"
    origin = "R-FCN (daijifeng001/caffe-rfcn)"
    param_field = "psroi_pooling_param"

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 2)
        p = layer.param.psroi_pooling_param
        missing = [f for f in ("spatial_scale", "output_dim", "group_size") if not p.HasField(f)]
        if missing:
            raise shape_error(layer, f"psroi_pooling_param lacks {', '.join(missing)}; the "
                                     "fork requires spatial_scale, output_dim and group_size")
        if p.output_dim <= 0 or p.group_size <= 0:
            raise shape_error(layer, f"output_dim {p.output_dim} and group_size "
                                     f"{p.group_size}; expected both > 0")
        _feature_map(layer, inputs[0])
        want = p.output_dim * p.group_size * p.group_size
        if inputs[0][1] != want:
            raise shape_error(layer, f"the score maps have {inputs[0][1]} channels; expected "
                                     f"output_dim * group_size^2 = {want}")
        return [(_rois_count(layer, inputs[1]), p.output_dim, p.group_size, p.group_size)]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> PSROIPooling:
        p = layer.param.psroi_pooling_param
        return PSROIPooling(p.output_dim, p.group_size, p.spatial_scale)


def _rpn_inputs(layer: LayerNode, inputs: Sequence[Shape], anchors: int) -> None:
    """Scores (N, 2A, H, W) and deltas (N, 4A, H, W), checked against A anchors."""
    expect_bottoms(layer, inputs, 3)
    if not 1 <= len(layer.param.top) <= 2:
        raise shape_error(layer, f"has {len(layer.param.top)} top(s); expected 1 (rois) or 2 "
                                 "(rois, scores)")
    scores, deltas = (tuple(s) for s in inputs[:2])
    if len(scores) != 4 or scores[1] != 2 * anchors:
        raise shape_error(layer, f"the scores (bottom 0) have shape {scores}; expected "
                                 f"(N, {2 * anchors}, H, W): 2 x {anchors} anchors")
    want = (scores[0], 4 * anchors, *scores[2:])
    if deltas != want:
        raise shape_error(layer, f"the box deltas (bottom 1) have shape {deltas}; expected "
                                 f"{want}: 4 x {anchors} anchors at the scores' cells")


@register_converter
class ProposalConverter(Converter):
    """Bottoms: scores (N, 2A, H, W), deltas (N, 4A, H, W), im_info (>= 2 values: height,
    width); tops rois (R, 5) [, scores (R,)], R <= N * post_nms_topn."""

    caffe_type = "Proposal"
    origin = "inisis/caffe"
    limits = ("row count depends on the scores (inferred axis 0 is the bound N * post_nms_topn); "
              "no ONNX / TorchScript / .pt2 export")
    data_dependent = True
    traceable = False
    trace_limit = PROPOSAL_TRACE_LIMIT

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        p = layer.param.proposal_param
        if not p.ratio or not p.scale:
            raise shape_error(layer, f"proposal_param has {len(p.ratio)} ratio(s) and "
                                     f"{len(p.scale)} scale(s); expected at least one of each")
        if p.post_nms_topn <= 0:
            raise shape_error(layer, "post_nms_topn 0; expected > 0 (Caffe sizes its output "
                                     "buffer by it)")
        _rpn_inputs(layer, inputs, len(p.ratio) * len(p.scale))
        if count(inputs[2]) < 2:
            raise shape_error(layer, f"im_info (bottom 2) has shape {tuple(inputs[2])}; "
                                     "expected at least 2 values (image height, width)")
        rows = inputs[0][0] * p.post_nms_topn
        return [(rows, 5), (rows,)][:len(layer.param.top)]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Proposal:
        p = layer.param.proposal_param
        return Proposal(p.feat_stride, caffe_anchors(p.base_size, p.ratio, p.scale),
                        float(p.min_size), p.pre_nms_topn, p.post_nms_topn, p.nms_thresh,
                        scores_top=len(layer.param.top) == 2)


# py-faster-rcnn's lib/fast_rcnn/config.py, TEST phase (the deploy nets' phase).
PY_FASTER_RCNN_TEST = {"pre_nms_topn": 6000, "post_nms_topn": 300, "nms_thresh": 0.7,
                       "min_size": 16}
#: (module, layer) of the Python layers converted here.
PROPOSAL_LAYER = ("rpn.proposal_layer", "ProposalLayer")
_PARAM_KEYS = ("feat_stride", "scales", "ratios")


def parse_param_str(text: str) -> dict:
    """The Python layer's ``param_str``, YAML such as ``'feat_stride': 16`` (a flow mapping
    with or without braces, or ``key: value`` lines); ValueError if it is none of these."""
    text = text.strip()
    for candidate in (text, "{" + text + "}"):
        try:
            value = ast.literal_eval(candidate) if candidate else {}
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, dict):
            return value
    found = {}
    for item in text.replace("\n", ",").split(","):
        if item.strip():
            key, sep, value = item.partition(":")
            if not sep:
                raise ValueError(f"'{item.strip()}' is not 'key: value'")
            found[key.strip().strip("'\"")] = ast.literal_eval(value.strip())
    return found


@register_converter
class PythonConverter(Converter):
    """Python layers with bottoms, by ``python_param`` module and layer. Only py-faster-rcnn's
    ``rpn.proposal_layer.ProposalLayer``: bottoms scores (1, 2A, H, W), deltas (1, 4A, H, W),
    im_info (1, 3); tops rois (R, 5) [, scores (R, 1)], R <= 300.

    ``param_str`` gives ``feat_stride``; ``scales`` / ``ratios`` (read by py-R-FCN and later
    forks; py-faster-rcnn itself always uses 8, 16, 32 and 0.5, 1, 2) change the anchors. The
    thresholds are the TEST phase's of py-faster-rcnn's config (pre 6000, post 300, NMS 0.7,
    min size 16 times im_info[2]). Caffe's set-up shape of the rois is (1, 5); the inferred one
    is the bound (300, 5).
    """

    caffe_type = "Python"
    origin = "py-faster-rcnn (rbgirshick/py-faster-rcnn)"
    param_field = "python_param"
    limits = ("only rpn.proposal_layer.ProposalLayer (py-faster-rcnn, TEST settings); row count "
              "depends on the scores; no ONNX / TorchScript / .pt2 export")
    data_dependent = True
    traceable = False
    trace_limit = PROPOSAL_TRACE_LIMIT

    def unsupported(self, layer: LayerNode) -> list[str]:
        p = layer.param.python_param
        if (p.module, p.layer) != PROPOSAL_LAYER:
            return [(f"python_param module '{p.module}' layer '{p.layer}': no converter for this "
                    f"Python layer (only {'.'.join(PROPOSAL_LAYER)})")]
        try:
            params = parse_param_str(p.param_str)
        except (ValueError, SyntaxError) as exc:
            return [f"python_param param_str {p.param_str!r} is not a YAML mapping ({exc})"]
        found = [f"python_param param_str key '{k}' (value {v!r}): not read by "
                 f"{'.'.join(PROPOSAL_LAYER)}; expected only {', '.join(_PARAM_KEYS)}"
                 for k, v in params.items() if k not in _PARAM_KEYS]
        stride = params.get("feat_stride")
        if not isinstance(stride, int) or isinstance(stride, bool) or stride <= 0:
            found.append(f"python_param param_str feat_stride {stride!r}; expected a positive "
                         "integer")
        for key in ("scales", "ratios"):
            value = params.get(key, (1,))
            if not isinstance(value, (list, tuple)) or not value or not all(
                    isinstance(v, (int, float)) and v > 0 for v in value):
                found.append(f"python_param param_str {key} {value!r}; expected a list of "
                             "positive numbers")
        return found

    def _anchors(self, layer: LayerNode):
        problems = self.unsupported(layer)
        if problems:  # a caller that did not ask first: the same findings, as our error
            raise shape_error(layer, "; ".join(problems))
        params = parse_param_str(layer.param.python_param.param_str)
        return params["feat_stride"], py_faster_rcnn_anchors(
            16, params.get("ratios", (0.5, 1, 2)), params.get("scales", (8, 16, 32)))

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        _, anchors = self._anchors(layer)
        _rpn_inputs(layer, inputs, len(anchors))
        if inputs[0][0] != 1:
            raise shape_error(layer, f"a batch of {inputs[0][0]}; py-faster-rcnn's "
                                     "ProposalLayer supports only single item batches (N = 1)")
        if len(inputs[2]) < 2 or inputs[2][0] < 1 or count(inputs[2], 1) < 3:
            raise shape_error(layer, f"im_info (bottom 2) has shape {tuple(inputs[2])}; "
                                     "expected (1, 3): image height, width, scale")
        rows = PY_FASTER_RCNN_TEST["post_nms_topn"]
        return [(rows, 5), (rows, 1)][:len(layer.param.top)]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> PyFasterRCNNProposal:
        stride, anchors = self._anchors(layer)
        t = PY_FASTER_RCNN_TEST
        return PyFasterRCNNProposal(stride, anchors, float(t["min_size"]), t["pre_nms_topn"],
                                    t["post_nms_topn"], t["nms_thresh"],
                                    scores_top=len(layer.param.top) == 2)
