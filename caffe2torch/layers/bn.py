"""BN: the forks' batch normalisation layer of that name, in its three stored forms.

- **hszhao/PSPNet** ``src/caffe/layers/bn_layer.cpp``: 4 blobs of shape (1, C, 1, 1): slope,
  bias, mean, variance; TEST phase or ``frozen``:
  ``y = ((x - mean) * (var + eps)^-1/2) * slope + bias``.
- **inisis/caffe** ``src/caffe/layers/bn_layer.cpp``: the same fields and blob order, shapes
  (1, C), and blob 3 is the moving average of the *inverse* standard deviation (its TRAIN pass
  averages ``(var + eps)^-1/2``): ``y = ((x - mean) * blob3) * slope + bias``, no eps at test
  time. That fork compiles the layer but never registers it (no ``REGISTER_LAYER_CLASS``), so
  its own Caffe cannot run a BN layer: the form is read from the source only.
- **alexgkendall/caffe-segnet** ``src/caffe/layers/bn_layer.cpp``: 2 blobs (1, C, 1, 1) scale,
  shift; ``bn_mode: INFERENCE`` is ``y = x * scale + shift``; LEARN (its default) normalises with
  the batch's statistics at every phase (``var = E(x^2) - E(x)^2``, eps 1e-9) and may give the
  batch mean and variance as tops 2 and 3.

Which form a layer has, in this order:

1. what ``bn_param`` declares: ``bn_mode`` / ``scale_filler`` / ``shift_filler`` (or more than
   one top) are SegNet's; ``slope_filler`` / ``bias_filler`` / ``momentum`` / ``eps`` /
   ``frozen`` / ``engine`` are the slope forms'; both at once is an error;
2. the caffemodel's blobs, at binding: 2 blobs are SegNet's; 4 blobs of (1, C, 1, 1) PSPNet's,
   of (1, C) inisis/caffe's (the declaration never tells these two apart; the file always does);
3. with no weights to tell: PSPNet's, shown in the module's repr as "assumed"; binding weights
   replaces the assumption by what the blobs prove.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import nn

from caffe2torch.ir.graph import LayerNode
from caffe2torch.layers._common import expect_bottoms
from caffe2torch.layers.registry import Converter, copy_blob, register_converter, shape_error
from caffe2torch.modules.segmentation import ForkBN
from caffe2torch.proto import caffe_pb2

Shape = tuple[int, ...]
_SEGNET_FIELDS = ("bn_mode", "scale_filler", "shift_filler")
_SLOPE_FIELDS = ("slope_filler", "bias_filler", "momentum", "eps", "frozen", "engine")


def declared_family(layer: LayerNode) -> str | None:
    """"segnet", "slope" (PSPNet / inisis), or None when the layer declares neither."""
    p = layer.param.bn_param
    segnet = [f for f in _SEGNET_FIELDS if p.HasField(f)]
    slope = [f for f in _SLOPE_FIELDS if p.HasField(f)]
    if len(layer.param.top) > 1:
        segnet.append(f"{len(layer.param.top)} tops")
    if segnet and slope:
        raise shape_error(layer, f"bn_param mixes SegNet's BN ({', '.join(segnet)}) with "
                                 f"PSPNet's / inisis/caffe's ({', '.join(slope)}); expected one")
    return "segnet" if segnet else "slope" if slope else None


def form_shapes(form: str, channels: int) -> list[Shape]:
    if form == "segnet":
        return [(1, channels, 1, 1)] * 2
    return [(1, channels)] * 4 if form == "inv_std" else [(1, channels, 1, 1)] * 4


def _candidate_forms(layer: LayerNode) -> list[str]:
    family = declared_family(layer)
    if family == "segnet":
        return ["segnet"]
    return ["variance", "inv_std"] + ([] if family == "slope" else ["segnet"])


def _form_of_blobs(blobs: Sequence[np.ndarray]) -> str:
    if len(blobs) == 2:
        return "segnet"
    return "inv_std" if blobs[0].ndim == 2 else "variance"


@register_converter
class BNConverter(Converter):
    """The forks' BN (PSPNet, SegNet, inisis/caffe); the module docstring gives the rule that
    picks the form."""

    caffe_type = "BN"
    origin = "PSPNet (hszhao/PSPNet), SegNet (alexgkendall/caffe-segnet), inisis/caffe"
    limits = ("form from bn_param's fields, else the caffemodel's blobs (PSPNet's "
              "assumed without weights); train mode does not update the stored statistics")

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1)
        shape = tuple(inputs[0])
        if len(shape) != 4:
            raise shape_error(layer, f"input has shape {shape}; BN normalises 4-D (N, C, H, W) "
                                     "blobs")
        declared_family(layer)  # raises on a contradiction
        tops = len(layer.param.top)
        if tops > 3 or (tops > 1 and layer.param.bn_param.bn_mode != caffe_pb2.BNParameter.LEARN):
            raise shape_error(layer, f"{tops} tops; SegNet's BN has up to 3 (batch mean and "
                                     "variance) in bn_mode LEARN only, the others one")
        return [shape] + [(1, shape[1], 1, 1)] * (tops - 1)

    def blob_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        return form_shapes(_candidate_forms(layer)[0], inputs[0][1])

    def blob_forms(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[list[Shape]]:
        return [form_shapes(form, inputs[0][1]) for form in _candidate_forms(layer)]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> ForkBN:
        p = layer.param.bn_param
        forms = _candidate_forms(layer)
        chosen_by = "declared" if len(forms) == 1 else "assumed: no weights bound yet"
        return ForkBN(inputs[0][1], forms[0], eps=p.eps, frozen=p.frozen,
                      learn=p.bn_mode == caffe_pb2.BNParameter.LEARN,
                      extra_tops=len(layer.param.top) - 1, chosen_by=chosen_by)

    def load_blobs(self, module: nn.Module, blobs: Sequence[np.ndarray]) -> None:
        form = _form_of_blobs(blobs)
        if form != module.form or module.chosen_by != "declared":
            module.set_form(form)
            module.chosen_by = "from the caffemodel's blobs"
        for name, blob in zip(module.caffe_blobs, blobs, strict=True):
            copy_blob(getattr(module, name), blob)

    def dump_blobs(self, module: nn.Module, layer: LayerNode,
                   inputs: Sequence[Shape]) -> list[np.ndarray]:
        shapes = form_shapes(module.form, inputs[0][1])
        return [getattr(module, name).detach().cpu().numpy().astype(np.float32).reshape(shape)
                for name, shape in zip(module.caffe_blobs, shapes, strict=True)]

    def random_blobs(self, layer: LayerNode, inputs: Sequence[Shape],
                     rng: np.random.Generator) -> list[np.ndarray]:
        shapes = self.blob_shapes(layer, inputs)
        scale = rng.normal(1.0, 0.3, shapes[0])
        shift = rng.normal(0.0, 0.3, shapes[1])
        if len(shapes) == 2:
            return [scale.astype(np.float32), shift.astype(np.float32)]
        mean = rng.normal(0.0, 0.5, shapes[2])
        spread = rng.uniform(0.5, 2.0, shapes[3])  # an inverse std or a variance: positive
        return [a.astype(np.float32) for a in (scale, shift, mean, spread)]

    def flops(self, layer, inputs, outputs) -> int:
        return int(np.prod(inputs[0])) * 2
