"""Write the model zoo's prototxt files from the published architectures (dev-time tool).

    python tools/make_zoo.py            # rewrites model_zoo/*/deploy.prototxt
    python tools/make_zoo.py --check    # exit 1 if a committed prototxt differs from this code

Each net is built as a NetParameter with the official layer names, types, parameters and blob
wiring, so the official weights bind by name. Training-only fields (``param`` learning-rate
multipliers, weight fillers) are left out: they do not change the graph. The input is one image;
the converted net accepts other batch sizes.
"""
from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from google.protobuf import text_format

from caffe2torch.proto import caffe_pb2

V1 = caffe_pb2.V1LayerParameter
Pool = caffe_pb2.PoolingParameter
ZOO = Path(__file__).resolve().parents[1] / "model_zoo"
VGG16_BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
# GoogLeNet (Szegedy et al. 2014, table 1): #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj
INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128), "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
# SqueezeNet v1.1 fire modules: squeeze 1x1, expand 1x1 (= expand 3x3); max pools after fire3, 5
FIRES = {2: (16, 64), 3: (16, 64), 4: (32, 128), 5: (32, 128), 6: (48, 192), 7: (48, 192),
         8: (64, 256), 9: (64, 256)}
# ResNet-50 bottleneck stages: blocks, bottleneck width (the output is 4x) at full width
RESNET50_STAGES = ((3, 64), (4, 128), (6, 256), (3, 512))


# --------------------------------------------------------------------------- V1 (VGG, 2014)

def _v1_layer(net, name: str, kind: str, bottom: str, top: str):
    layer = net.layers.add(name=name, type=V1.LayerType.Value(kind))
    layer.bottom.append(bottom)
    layer.top.append(top)
    return layer


def vgg16_v1(name: str, num_classes: int) -> caffe_pb2.NetParameter:
    """VGG-16 (Simonyan & Zisserman, configuration D) in the 2014 V1 deploy layout."""
    net = caffe_pb2.NetParameter(name=name, input=["data"], input_dim=[1, 3, 224, 224])
    blob = "data"
    for block, (convs, width) in enumerate(VGG16_BLOCKS, 1):
        for i in range(1, convs + 1):
            conv = f"conv{block}_{i}"
            layer = _v1_layer(net, conv, "CONVOLUTION", blob, conv)
            layer.convolution_param.num_output = width
            layer.convolution_param.pad.append(1)
            layer.convolution_param.kernel_size.append(3)
            _v1_layer(net, f"relu{block}_{i}", "RELU", conv, conv)
            blob = conv
        pool = _v1_layer(net, f"pool{block}", "POOLING", blob, f"pool{block}")
        pool.pooling_param.pool = Pool.MAX
        pool.pooling_param.kernel_size = 2
        pool.pooling_param.stride = 2
        blob = f"pool{block}"
    for fc, width in (("fc6", 4096), ("fc7", 4096), ("fc8", num_classes)):
        _v1_layer(net, fc, "INNER_PRODUCT", blob, fc).inner_product_param.num_output = width
        blob = fc
        if fc != "fc8":
            index = fc[2:]
            _v1_layer(net, f"relu{index}", "RELU", fc, fc)
            _v1_layer(net, f"drop{index}", "DROPOUT", fc, fc).dropout_param.dropout_ratio = 0.5
    _v1_layer(net, "prob", "SOFTMAX", "fc8", "prob")
    return net


# --------------------------------------------------------------------------- V2 layer helpers

def _net(name: str, shape: Sequence[int],
         input_layer: str | None = "data") -> caffe_pb2.NetParameter:
    """A V2 net whose input is an ``Input`` layer, or (``input_layer=None``) net-level fields."""
    net = caffe_pb2.NetParameter(name=name)
    if input_layer is None:
        net.input.append("data")
        net.input_dim.extend(shape)
    else:
        _layer(net, input_layer, "Input", [], ["data"]).input_param.shape.add(dim=shape)
    return net


def _layer(net, name: str, kind: str, bottoms: Sequence[str], tops: Sequence[str]):
    return net.layer.add(name=name, type=kind, bottom=bottoms, top=tops)


def _conv(net, name: str, bottom: str, num_output: int, kernel: int, *, stride: int | None = None,
          pad: int | None = None, group: int | None = None, bias: bool | None = None,
          top: str | None = None) -> str:
    """A Convolution; ``None`` leaves a field unset (as the original file does)."""
    top = top or name
    param = _layer(net, name, "Convolution", [bottom], [top]).convolution_param
    param.num_output = num_output
    if bias is not None:
        param.bias_term = bias
    if pad is not None:
        param.pad.append(pad)
    param.kernel_size.append(kernel)
    if stride is not None:
        param.stride.append(stride)
    if group is not None:
        param.group = group
    return top


def _relu(net, name: str, blob: str) -> str:
    _layer(net, name, "ReLU", [blob], [blob])
    return blob


def _pool(net, name: str, bottom: str, method: int, kernel: int | None = None,
          stride: int | None = None, pad: int | None = None, global_pooling: bool = False) -> str:
    param = _layer(net, name, "Pooling", [bottom], [name]).pooling_param
    param.pool = method
    if kernel is not None:
        param.kernel_size = kernel
    if stride is not None:
        param.stride = stride
    if pad is not None:
        param.pad = pad
    if global_pooling:
        param.global_pooling = True
    return name


def _lrn(net, name: str, bottom: str) -> str:
    """The AlexNet / GoogLeNet cross-channel LRN: size 5, alpha 1e-4, beta 0.75."""
    param = _layer(net, name, "LRN", [bottom], [name]).lrn_param
    param.local_size, param.alpha, param.beta = 5, 0.0001, 0.75
    return name


def _dropout(net, name: str, blob: str, ratio: float) -> str:
    _layer(net, name, "Dropout", [blob], [blob]).dropout_param.dropout_ratio = ratio
    return blob


def _fc(net, name: str, bottom: str, num_output: int) -> str:
    _layer(net, name, "InnerProduct", [bottom], [name]).inner_product_param.num_output = num_output
    return name


def _softmax(net, bottom: str) -> str:
    _layer(net, "prob", "Softmax", [bottom], ["prob"])
    return "prob"


# --------------------------------------------------------------------------- BVLC AlexNet

def bvlc_alexnet() -> caffe_pb2.NetParameter:
    """AlexNet (Krizhevsky et al. 2012) as BVLC replicated it: two-group conv2/4/5, LRN."""
    net = _net("AlexNet", [1, 3, 227, 227])
    blob = _relu(net, "relu1", _conv(net, "conv1", "data", 96, 11, stride=4))
    blob = _pool(net, "pool1", _lrn(net, "norm1", blob), Pool.MAX, 3, 2)
    blob = _relu(net, "relu2", _conv(net, "conv2", blob, 256, 5, pad=2, group=2))
    blob = _pool(net, "pool2", _lrn(net, "norm2", blob), Pool.MAX, 3, 2)
    blob = _relu(net, "relu3", _conv(net, "conv3", blob, 384, 3, pad=1))
    blob = _relu(net, "relu4", _conv(net, "conv4", blob, 384, 3, pad=1, group=2))
    blob = _relu(net, "relu5", _conv(net, "conv5", blob, 256, 3, pad=1, group=2))
    blob = _pool(net, "pool5", blob, Pool.MAX, 3, 2)
    for index, width in ((6, 4096), (7, 4096)):
        blob = _relu(net, f"relu{index}", _fc(net, f"fc{index}", blob, width))
        blob = _dropout(net, f"drop{index}", blob, 0.5)
    _softmax(net, _fc(net, "fc8", blob, 1000))
    return net


# --------------------------------------------------------------------------- BVLC GoogLeNet

def _inception(net, name: str, bottom: str, widths: Sequence[int]) -> str:
    n1x1, n3x3_reduce, n3x3, n5x5_reduce, n5x5, pool_proj = widths
    prefix = f"inception_{name}"
    branches = [_relu(net, f"{prefix}/relu_1x1", _conv(net, f"{prefix}/1x1", bottom, n1x1, 1))]
    for size, reduce, width, pad in (("3x3", n3x3_reduce, n3x3, 1), ("5x5", n5x5_reduce, n5x5, 2)):
        blob = _conv(net, f"{prefix}/{size}_reduce", bottom, reduce, 1)
        blob = _relu(net, f"{prefix}/relu_{size}_reduce", blob)
        blob = _conv(net, f"{prefix}/{size}", blob, width, int(size[0]), pad=pad)
        branches.append(_relu(net, f"{prefix}/relu_{size}", blob))
    blob = _pool(net, f"{prefix}/pool", bottom, Pool.MAX, 3, 1, pad=1)
    branches.append(_relu(net, f"{prefix}/relu_pool_proj",
                          _conv(net, f"{prefix}/pool_proj", blob, pool_proj, 1)))
    _layer(net, f"{prefix}/output", "Concat", branches, [f"{prefix}/output"])
    return f"{prefix}/output"


def bvlc_googlenet() -> caffe_pb2.NetParameter:
    """GoogLeNet (Inception v1, Szegedy et al. 2014), the deploy net without auxiliary heads."""
    net = _net("GoogleNet", [1, 3, 224, 224])
    blob = _conv(net, "conv1/7x7_s2", "data", 64, 7, stride=2, pad=3)
    blob = _pool(net, "pool1/3x3_s2", _relu(net, "conv1/relu_7x7", blob), Pool.MAX, 3, 2)
    blob = _lrn(net, "pool1/norm1", blob)
    blob = _relu(net, "conv2/relu_3x3_reduce", _conv(net, "conv2/3x3_reduce", blob, 64, 1))
    blob = _relu(net, "conv2/relu_3x3", _conv(net, "conv2/3x3", blob, 192, 3, pad=1))
    blob = _pool(net, "pool2/3x3_s2", _lrn(net, "conv2/norm2", blob), Pool.MAX, 3, 2)
    for name, widths in INCEPTION.items():
        blob = _inception(net, name, blob, widths)
        if name in ("3b", "4e"):
            pool = "pool3/3x3_s2" if name == "3b" else "pool4/3x3_s2"
            blob = _pool(net, pool, blob, Pool.MAX, 3, 2)
    blob = _pool(net, "pool5/7x7_s1", blob, Pool.AVE, 7, 1)
    blob = _dropout(net, "pool5/drop_7x7_s1", blob, 0.4)
    _softmax(net, _fc(net, "loss3/classifier", blob, 1000))
    return net


# --------------------------------------------------------------------------- SqueezeNet v1.1

def _fire(net, index: int, bottom: str, squeeze: int, expand: int) -> str:
    prefix = f"fire{index}"
    blob = _conv(net, f"{prefix}/squeeze1x1", bottom, squeeze, 1)
    blob = _relu(net, f"{prefix}/relu_squeeze1x1", blob)
    left = _relu(net, f"{prefix}/relu_expand1x1",
                 _conv(net, f"{prefix}/expand1x1", blob, expand, 1))
    right = _relu(net, f"{prefix}/relu_expand3x3",
                  _conv(net, f"{prefix}/expand3x3", blob, expand, 3, pad=1))
    _layer(net, f"{prefix}/concat", "Concat", [left, right], [f"{prefix}/concat"])
    return f"{prefix}/concat"


def squeezenet_v1_1() -> caffe_pb2.NetParameter:
    """SqueezeNet v1.1 (Iandola et al. 2016; forresti/SqueezeNet): 64 3x3 conv1, early pooling."""
    net = _net("", [1, 3, 227, 227])
    blob = _relu(net, "relu_conv1", _conv(net, "conv1", "data", 64, 3, stride=2))
    blob = _pool(net, "pool1", blob, Pool.MAX, 3, 2)
    for index, (squeeze, expand) in FIRES.items():
        blob = _fire(net, index, blob, squeeze, expand)
        if index in (3, 5):
            blob = _pool(net, f"pool{index}", blob, Pool.MAX, 3, 2)
    blob = _dropout(net, "drop9", blob, 0.5)
    blob = _relu(net, "relu_conv10", _conv(net, "conv10", blob, 1000, 1))
    _softmax(net, _pool(net, "pool10", blob, Pool.AVE, global_pooling=True))
    return net


# --------------------------------------------------------------------------- ResNet-50 family

# A naming scheme maps (stage 0-3, block 0-n, part) to a layer name; part is "conv", "bn",
# "scale" or "relu" + ":" + the branch ("1" shortcut, "2a", "2b", "2c"), or "sum" / "sum_relu".
Names = Callable[[int, int, str], str]


def _msra_names(stage: int, block: int, part: str) -> str:
    """KaimingHe/deep-residual-networks: res2a_branch2a, bn2a_branch2a, res2a_relu ..."""
    unit = f"{stage + 2}{chr(ord('a') + block)}"
    kind, _, branch = part.partition(":")
    return {"conv": f"res{unit}_branch{branch}", "bn": f"bn{unit}_branch{branch}",
            "scale": f"scale{unit}_branch{branch}", "relu": f"res{unit}_branch{branch}_relu",
            "sum": f"res{unit}", "sum_relu": f"res{unit}_relu"}[kind]


def _nsfw_names(stage: int, block: int, part: str) -> str:
    """yahoo/open_nsfw: conv_stage0_block0_branch2a, bn_..., eltwise_stage0_block0 ..."""
    unit = f"stage{stage}_block{block}"
    kind, _, branch = part.partition(":")
    branch = "proj_shortcut" if branch == "1" else f"branch{branch}"
    return {"conv": f"conv_{unit}_{branch}", "bn": f"bn_{unit}_{branch}",
            "scale": f"scale_{unit}_{branch}", "relu": f"relu_{unit}_{branch}",
            "sum": f"eltwise_{unit}", "sum_relu": f"relu_{unit}"}[kind]


def _conv_bn_scale(net, conv: str, bn: str, scale: str, bottom: str, num_output: int,
                   kernel: int, stride: int, bias: bool | None) -> str:
    """Convolution + BatchNorm (stored statistics) + Scale with bias, all in place after conv."""
    blob = _conv(net, conv, bottom, num_output, kernel, stride=stride, pad=kernel // 2, bias=bias)
    _layer(net, bn, "BatchNorm", [blob], [blob]).batch_norm_param.use_global_stats = True
    _layer(net, scale, "Scale", [blob], [blob]).scale_param.bias_term = True
    return blob


def _bottleneck(net, names: Names, stage: int, block: int, bottom: str, width: int,
                bias: bool | None) -> str:
    """1x1 -> 3x3 -> 1x1 (4x width), stride 2 on the first 1x1 of stages 1-3, summed with the
    input or (first block) a projected shortcut, then ReLU."""
    stride = 2 if block == 0 and stage > 0 else 1

    def unit(branch: str, source: str, out: int, kernel: int, step: int) -> str:
        return _conv_bn_scale(net, names(stage, block, f"conv:{branch}"),
                              names(stage, block, f"bn:{branch}"),
                              names(stage, block, f"scale:{branch}"), source, out, kernel, step,
                              bias)

    shortcut = unit("1", bottom, 4 * width, 1, stride) if block == 0 else bottom
    blob = _relu(net, names(stage, block, "relu:2a"), unit("2a", bottom, width, 1, stride))
    blob = _relu(net, names(stage, block, "relu:2b"), unit("2b", blob, width, 3, 1))
    blob = unit("2c", blob, 4 * width, 1, 1)
    total = names(stage, block, "sum")
    _layer(net, total, "Eltwise", [shortcut, blob], [total])
    return _relu(net, names(stage, block, "sum_relu"), total)


def _resnet50_body(net, names: Names, stem: tuple[str, str, str, str], divisor: int,
                   bias: bool | None) -> str:
    """conv1 7x7/2 (with bias) + BN + Scale + ReLU, max pool 3/2, the four stages."""
    conv, bn, scale, relu = stem
    blob = _conv(net, conv, "data", 64, 7, stride=2, pad=3)
    _layer(net, bn, "BatchNorm", [blob], [blob]).batch_norm_param.use_global_stats = True
    _layer(net, scale, "Scale", [blob], [blob]).scale_param.bias_term = True
    blob = _pool(net, "pool1", _relu(net, relu, blob), Pool.MAX, 3, 2)
    for stage, (blocks, width) in enumerate(RESNET50_STAGES):
        for block in range(blocks):
            blob = _bottleneck(net, names, stage, block, blob, width // divisor, bias)
    return blob


def resnet50() -> caffe_pb2.NetParameter:
    """ResNet-50 (He et al. 2015) as MSRA released it: bias-free convs after conv1, BN + Scale."""
    net = _net("ResNet-50", [1, 3, 224, 224], input_layer=None)
    blob = _resnet50_body(net, _msra_names, ("conv1", "bn_conv1", "scale_conv1", "conv1_relu"),
                          divisor=1, bias=False)
    blob = _pool(net, "pool5", blob, Pool.AVE, 7, 1)
    _softmax(net, _fc(net, "fc1000", blob, 1000))
    return net


def open_nsfw() -> caffe_pb2.NetParameter:
    """Yahoo's open_nsfw: ResNet-50 at half width ("1by2"), convs with bias, a 2-way classifier."""
    net = _net("ResNet_50_1by2_nsfw", [1, 3, 224, 224])
    blob = _resnet50_body(net, _nsfw_names, ("conv_1", "bn_1", "scale_1", "relu_1"),
                          divisor=2, bias=None)
    blob = _pool(net, "pool", blob, Pool.AVE, 7, 1)
    _softmax(net, _fc(net, "fc_nsfw", blob, 2))
    return net


# --------------------------------------------------------------------------- SSD detectors

Conv = caffe_pb2.ConvolutionParameter
# (min_size, max_size or None, aspect ratios, step or None) of each SSD head's PriorBox
PriorSpec = tuple[float, float | None, Sequence[float], float | None]


def _ssd_conv(net, name: str, bottom: str, num_output: int, kernel: int, **fields) -> str:
    """A Convolution whose fields are set exactly as given (``pad=0`` is written, unlike
    :func:`_conv`): SSD deploy files spell out ``pad: 0`` and ``stride: 1``."""
    param = _layer(net, name, "Convolution", [bottom], [name]).convolution_param
    param.num_output = num_output
    param.kernel_size.append(kernel)
    for field in ("pad", "stride", "dilation"):
        if field in fields:
            getattr(param, field).append(fields.pop(field))
    for field, value in fields.items():
        setattr(param, field, value)
    return name


def _ssd_head(net, prefix: str, source: str, num_loc: int, num_conf: int, prior: PriorSpec,
              **conv) -> tuple[str, str, str]:
    """One SSD prediction head: loc and conf convolutions, each permuted to NHWC and flattened,
    and the feature map's PriorBox (over the image blob ``data``)."""
    flats = []
    for kind, width in (("loc", num_loc), ("conf", num_conf)):
        blob = _ssd_conv(net, f"{prefix}_mbox_{kind}", source, width, **conv)
        _layer(net, f"{blob}_perm", "Permute", [blob], [f"{blob}_perm"]).permute_param.order \
            .extend([0, 2, 3, 1])
        _layer(net, f"{blob}_flat", "Flatten", [f"{blob}_perm"], [f"{blob}_flat"]) \
            .flatten_param.axis = 1
        flats.append(f"{blob}_flat")
    min_size, max_size, ratios, step = prior
    name = f"{prefix}_mbox_priorbox"
    param = _layer(net, name, "PriorBox", [source, "data"], [name]).prior_box_param
    param.min_size.append(min_size)
    if max_size is not None:
        param.max_size.append(max_size)
    param.aspect_ratio.extend(ratios)
    param.flip, param.clip = True, False
    param.variance.extend([0.1, 0.1, 0.2, 0.2])
    if step is not None:
        param.step = step
    param.offset = 0.5
    return flats[0], flats[1], name


def _ssd_output(net, heads: Sequence[tuple[str, str, str]], num_classes: int,
                nms_threshold: float, top_k: int, keep_top_k: int, confidence: float) -> None:
    """Concatenated heads, softmax over the classes of each prior, DetectionOutput (TEST)."""
    for index, blob in enumerate(("mbox_loc", "mbox_conf", "mbox_priorbox")):
        concat = _layer(net, blob, "Concat", [head[index] for head in heads], [blob])
        concat.concat_param.axis = 2 if blob == "mbox_priorbox" else 1
    _layer(net, "mbox_conf_reshape", "Reshape", ["mbox_conf"], ["mbox_conf_reshape"]) \
        .reshape_param.shape.dim.extend([0, -1, num_classes])
    _layer(net, "mbox_conf_softmax", "Softmax", ["mbox_conf_reshape"], ["mbox_conf_softmax"]) \
        .softmax_param.axis = 2
    _layer(net, "mbox_conf_flatten", "Flatten", ["mbox_conf_softmax"], ["mbox_conf_flatten"]) \
        .flatten_param.axis = 1
    layer = _layer(net, "detection_out", "DetectionOutput",
                   ["mbox_loc", "mbox_conf_flatten", "mbox_priorbox"], ["detection_out"])
    layer.include.add(phase=caffe_pb2.TEST)
    param = layer.detection_output_param
    param.num_classes, param.share_location, param.background_label_id = num_classes, True, 0
    param.nms_param.nms_threshold, param.nms_param.top_k = nms_threshold, top_k
    param.code_type = caffe_pb2.PriorBoxParameter.CENTER_SIZE
    param.keep_top_k, param.confidence_threshold = keep_top_k, confidence


# OpenCV's res10 face detector: ResNet-10 stages (name, conv1 / conv2 widths, stride, the parts
# whose layer names end in "_h" as in the released file), then the extra SSD layers.
RES10_STAGES = (("64_1", 32, 32, 1, {"conv1", "bn2", "scale2", "conv2"}),
                ("128_1", 128, 128, 2, {"bn1", "scale1", "conv1", "conv_expand"}),
                ("256_1", 256, 256, 2, set()),
                ("512_1", 128, 256, 1, {"conv1", "bn2", "scale2", "conv2", "conv_expand"}))
RES10_EXTRAS = ((6, 128, 256, 2), (7, 64, 128, 2), (8, 64, 128, 1), (9, 64, 128, 1))
RES10_HEADS = (("conv4_3_norm", "conv4_3_norm", 16, 8, (30.0, 60.0, (2.0,), 8.0)),
               ("fc7", "fc7", 24, 12, (60.0, 111.0, (2.0, 3.0), 16.0)),
               ("conv6_2", "conv6_2_h", 24, 12, (111.0, 162.0, (2.0, 3.0), 32.0)),
               ("conv7_2", "conv7_2_h", 24, 12, (162.0, 213.0, (2.0, 3.0), 64.0)),
               ("conv8_2", "conv8_2_h", 16, 8, (213.0, 264.0, (2.0,), 100.0)),
               ("conv9_2", "conv9_2_h", 16, 8, (264.0, 315.0, (2.0,), 300.0)))


def _bn_scale(net, bn: str, scale: str, bottom: str, top: str) -> str:
    """BatchNorm (no parameters block, as in the file) + Scale with bias, in place after bn."""
    _layer(net, bn, "BatchNorm", [bottom], [top])
    _layer(net, scale, "Scale", [top], [top]).scale_param.bias_term = True
    return top


def _res10_stage(net, stage: str, bottom: str, conv1: int, conv2: int, stride: int,
                 suffixed: set[str]) -> str:
    """A pre-activation residual unit: (BN, Scale, ReLU,) conv 3x3, BN, Scale, ReLU, conv 3x3,
    summed with the input or (stride or width change) its 1x1 projection."""
    def name(part: str) -> str:
        return f"layer_{stage}_{part}" + ("_h" if part in suffixed else "")

    first = stage != "64_1"  # the first unit follows the max pool directly
    blob = bottom
    if first:
        blob = _bn_scale(net, name("bn1"), name("scale1"), bottom, name("bn1"))
        _relu_named(net, f"layer_{stage}_relu1", blob)
    branch = _ssd_conv(net, name("conv1"), blob, conv1, 3, bias_term=False, pad=1, stride=stride)
    _bn_scale(net, name("bn2"), name("scale2"), branch, branch)
    _relu_named(net, f"layer_{stage}_relu2", branch)
    dilation = {"dilation": 2, "pad": 2} if stage == "512_1" else {"pad": 1}
    branch = _ssd_conv(net, name("conv2"), branch, conv2, 3, bias_term=False, stride=1,
                       **dilation)
    shortcut = bottom
    if first:
        shortcut = _ssd_conv(net, name("conv_expand"), blob, conv2, 1, bias_term=False, pad=0,
                             stride=stride)
    total = f"layer_{stage}_sum"
    _layer(net, total, "Eltwise", [branch, shortcut], [total])
    return total


def _relu_named(net, name: str, blob: str, top: str | None = None) -> str:
    _layer(net, name, "ReLU", [blob], [top or blob])
    return top or blob


def res10_ssd_face() -> caffe_pb2.NetParameter:
    """OpenCV's face detector (samples/dnn/face_detector/deploy.prototxt): SSD 300x300 on a
    ResNet-10 with BatchNorm on the input, a dilated last stage, Normalize on conv4_3, 2 classes."""
    net = _net("", [1, 3, 300, 300], input_layer="input")
    blob = _bn_scale(net, "data_bn", "data_scale", "data", "data_bn")
    blob = _ssd_conv(net, "conv1_h", blob, 32, 7, pad=3, stride=2)
    _bn_scale(net, "conv1_bn_h", "conv1_scale_h", blob, blob)
    blob = _pool(net, "conv1_pool", _relu_named(net, "conv1_relu", blob), Pool.MAX, 3, 2)
    net.layer[-1].pooling_param.ClearField("pool")  # the file leaves the (default) MAX unset
    for stage, conv1, conv2, stride, suffixed in RES10_STAGES:
        blob = _res10_stage(net, stage, blob, conv1, conv2, stride, suffixed)
    _bn_scale(net, "last_bn_h", "last_scale_h", blob, blob)
    blob = _relu_named(net, "last_relu", blob, "fc7")
    for index, squeeze, width, stride in RES10_EXTRAS:
        blob = _ssd_conv(net, f"conv{index}_1_h", blob, squeeze, 1, pad=0, stride=1)
        blob = _relu_named(net, f"conv{index}_1_relu", blob)
        blob = _ssd_conv(net, f"conv{index}_2_h", blob, width, 3, pad=1, stride=stride)
        blob = _relu_named(net, f"conv{index}_2_relu", blob)
    norm = _layer(net, "conv4_3_norm", "Normalize", ["layer_256_1_bn1"], ["conv4_3_norm"])
    norm.norm_param.across_spatial, norm.norm_param.channel_shared = False, False
    heads = [_ssd_head(net, prefix, source, loc, conf, prior, kernel=3, pad=1, stride=1)
             for prefix, source, loc, conf, prior in RES10_HEADS]
    _ssd_output(net, heads, 2, nms_threshold=0.3, top_k=400, keep_top_k=200, confidence=0.01)
    return net


# MobileNet-SSD (chuanqi305): MobileNet v1 blocks (output width, stride), then extra layers
# (1x1 width, 3x3 width), then the heads (source, PriorBox min / max sizes and ratios).
MOBILENET_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1),
                    (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))
MOBILENET_SSD_EXTRAS = ((14, 256, 512), (15, 128, 256), (16, 128, 256), (17, 64, 128))
MOBILENET_SSD_HEADS = (("conv11", 3, (60.0, None, (2.0,), None)),
                       ("conv13", 6, (105.0, 150.0, (2.0, 3.0), None)),
                       ("conv14_2", 6, (150.0, 195.0, (2.0, 3.0), None)),
                       ("conv15_2", 6, (195.0, 240.0, (2.0, 3.0), None)),
                       ("conv16_2", 6, (240.0, 285.0, (2.0, 3.0), None)),
                       ("conv17_2", 6, (285.0, 300.0, (2.0, 3.0), None)))
VOC_CLASSES = 21


def mobilenet_ssd() -> caffe_pb2.NetParameter:
    """MobileNet-SSD for PASCAL VOC (chuanqi305/MobileNet-SSD voc/MobileNetSSD_deploy.prototxt,
    BatchNorm merged into the convolutions): depthwise 3x3 as grouped Convolution (engine CAFFE),
    heads on conv11 and conv13 and four extra layers, 21 classes."""
    net = _net("MobileNet-SSD", [1, 3, 300, 300], input_layer="input")
    blob = _relu_named(net, "conv0/relu", _ssd_conv(net, "conv0", "data", 32, 3, pad=1,
                                                    stride=2))
    width = 32
    for index, (out, stride) in enumerate(MOBILENET_BLOCKS, 1):
        strided = {"stride": stride} if stride != 1 else {}
        blob = _ssd_conv(net, f"conv{index}/dw", blob, width, 3, pad=1, group=width,
                         engine=Conv.CAFFE, **strided)
        blob = _relu_named(net, f"conv{index}/dw/relu", blob)
        blob = _relu_named(net, f"conv{index}/relu", _ssd_conv(net, f"conv{index}", blob, out, 1))
        width = out
    for index, squeeze, out in MOBILENET_SSD_EXTRAS:
        blob = _relu_named(net, f"conv{index}_1/relu",
                           _ssd_conv(net, f"conv{index}_1", blob, squeeze, 1))
        blob = _relu_named(net, f"conv{index}_2/relu",
                           _ssd_conv(net, f"conv{index}_2", blob, out, 3, pad=1, stride=2))
    heads = [_ssd_head(net, source, source, 4 * priors, VOC_CLASSES * priors, prior, kernel=1)
             for source, priors, prior in MOBILENET_SSD_HEADS]
    _ssd_output(net, heads, VOC_CLASSES, nms_threshold=0.45, top_k=100, keep_top_k=100,
                confidence=0.25)
    return net


NETS: dict[str, Callable[[], caffe_pb2.NetParameter]] = {
    "vgg_face": lambda: vgg16_v1("VGG_FACE_16_layers", 2622),
    "vgg16": lambda: vgg16_v1("VGG_ILSVRC_16_layers", 1000),
    "bvlc_alexnet": bvlc_alexnet,
    "bvlc_googlenet": bvlc_googlenet,
    "squeezenet_v1.1": squeezenet_v1_1,
    "resnet50": resnet50,
    "open_nsfw": open_nsfw,
    "res10_ssd_face": res10_ssd_face,
    "mobilenet_ssd": mobilenet_ssd,
}


def deploy_text(net: caffe_pb2.NetParameter) -> str:
    """Net-level fields (name, inputs) first, then the layers, as deploy files are laid out."""
    head = caffe_pb2.NetParameter()
    head.CopyFrom(net)
    head.ClearField("layers")
    head.ClearField("layer")
    body = caffe_pb2.NetParameter(layers=net.layers, layer=net.layer)
    return text_format.MessageToString(head) + text_format.MessageToString(body)


def write_all(zoo: Path = ZOO) -> None:
    for entry, make in NETS.items():
        path = zoo / entry / "deploy.prototxt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(deploy_text(make()))


def check_all(zoo: Path = ZOO) -> list[str]:
    """A unified diff per committed prototxt that differs from what this code writes."""
    stale = []
    for entry, make in NETS.items():
        path = zoo / entry / "deploy.prototxt"
        committed = path.read_text() if path.is_file() else ""
        expected = deploy_text(make())
        if committed != expected:
            stale.append("".join(difflib.unified_diff(
                committed.splitlines(keepends=True), expected.splitlines(keepends=True),
                str(path), f"{path} (tools/make_zoo.py)", n=1)))
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a committed prototxt differs from the generated one")
    args = parser.parse_args(argv)
    if not args.check:
        write_all()
        return 0
    stale = check_all()
    for diff in stale:
        print(diff[:4000], file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
