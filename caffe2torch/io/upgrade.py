"""Upgrade V0 and V1 network definitions to Caffe's current (V2) form, as Caffe does.

The order follows Caffe's ``UpgradeNetAsNeeded``: V0 -> V1 (folding V0 ``padding`` layers into the
convolution or pooling that reads them), data transformation fields -> ``transform_param``,
V1 -> V2, then the net-level ``input`` fields -> an ``Input`` layer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from caffe2torch.errors import PrototxtError
from caffe2torch.proto import caffe_pb2

V1 = caffe_pb2.V1LayerParameter
Format = Literal["V0", "V1", "V2"]

# V0 type strings -> V1 enum names (Caffe's UpgradeV0LayerType).
V0_TYPES = {
    "accuracy": "ACCURACY", "bnll": "BNLL", "concat": "CONCAT", "conv": "CONVOLUTION",
    "data": "DATA", "dropout": "DROPOUT", "euclidean_loss": "EUCLIDEAN_LOSS",
    "flatten": "FLATTEN", "hdf5_data": "HDF5_DATA", "hdf5_output": "HDF5_OUTPUT",
    "im2col": "IM2COL", "images": "IMAGE_DATA", "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT", "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS", "pool": "POOLING",
    "relu": "RELU", "sigmoid": "SIGMOID", "softmax": "SOFTMAX", "softmax_loss": "SOFTMAX_LOSS",
    "split": "SPLIT", "tanh": "TANH", "window_data": "WINDOW_DATA",
}

# V1 enum names -> V2 type strings (Caffe's UpgradeV1LayerType).
V1_TYPE_NAMES = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution", "DATA": "Data", "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise",
    "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice",
    "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}

# V0 scalar fields -> {V0 type: (V1 sub-message, field)}; None as type means "any type".
_V0_FIELDS: dict[str, dict[str | None, tuple[str, str]]] = {
    "num_output": {"conv": ("convolution_param", "num_output"),
                   "innerproduct": ("inner_product_param", "num_output")},
    "biasterm": {"conv": ("convolution_param", "bias_term"),
                 "innerproduct": ("inner_product_param", "bias_term")},
    "pad": {"conv": ("convolution_param", "pad"), "pool": ("pooling_param", "pad")},
    "kernelsize": {"conv": ("convolution_param", "kernel_size"),
                   "pool": ("pooling_param", "kernel_size")},
    "group": {"conv": ("convolution_param", "group")},
    "stride": {"conv": ("convolution_param", "stride"), "pool": ("pooling_param", "stride")},
    "pool": {"pool": ("pooling_param", "pool")},
    "dropout_ratio": {"dropout": ("dropout_param", "dropout_ratio")},
    "local_size": {"lrn": ("lrn_param", "local_size")},
    "alpha": {"lrn": ("lrn_param", "alpha")},
    "beta": {"lrn": ("lrn_param", "beta")},
    "k": {"lrn": ("lrn_param", "k")},
    "source": {"data": ("data_param", "source"), "hdf5_data": ("hdf5_data_param", "source"),
               "images": ("image_data_param", "source"),
               "window_data": ("window_data_param", "source"),
               "infogain_loss": ("infogain_loss_param", "source")},
    "scale": {None: ("transform_param", "scale")},
    "meanfile": {None: ("transform_param", "mean_file")},
    "batchsize": {"data": ("data_param", "batch_size"),
                  "hdf5_data": ("hdf5_data_param", "batch_size"),
                  "images": ("image_data_param", "batch_size"),
                  "window_data": ("window_data_param", "batch_size")},
    "cropsize": {None: ("transform_param", "crop_size")},
    "mirror": {None: ("transform_param", "mirror")},
    "rand_skip": {"data": ("data_param", "rand_skip"), "images": ("image_data_param", "rand_skip")},
    "shuffle_images": {"images": ("image_data_param", "shuffle")},
    "new_height": {"images": ("image_data_param", "new_height")},
    "new_width": {"images": ("image_data_param", "new_width")},
    "concat_dim": {"concat": ("concat_param", "concat_dim")},
    "det_fg_threshold": {"window_data": ("window_data_param", "fg_threshold")},
    "det_bg_threshold": {"window_data": ("window_data_param", "bg_threshold")},
    "det_fg_fraction": {"window_data": ("window_data_param", "fg_fraction")},
    "det_context_pad": {"window_data": ("window_data_param", "context_pad")},
    "det_crop_mode": {"window_data": ("window_data_param", "crop_mode")},
}
_V0_MESSAGES = {
    "weight_filler": {"conv": "convolution_param", "innerproduct": "inner_product_param"},
    "bias_filler": {"conv": "convolution_param", "innerproduct": "inner_product_param"},
    "hdf5_output_param": {"hdf5_output": None},
}
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")
_TRANSFORM_LAYERS = {"DATA": "data_param", "IMAGE_DATA": "image_data_param",
                     "WINDOW_DATA": "window_data_param"}


@dataclass
class NetDefinition:
    """A network definition upgraded to V2, with where it came from."""

    net: caffe_pb2.NetParameter
    source: str
    format: Format
    notes: list[str] = field(default_factory=list)


def upgrade_net(net: caffe_pb2.NetParameter, source: str = "<net>") -> NetDefinition:
    """Return a V2 copy of ``net`` (the argument is not modified)."""
    net = caffe_pb2.NetParameter.FromString(net.SerializeToString())
    notes: list[str] = []
    fmt: Format = "V2"
    if any(layer.HasField("layer") for layer in net.layers):
        fmt = "V0"
        if len(net.input_shape):
            raise PrototxtError(
                f"{source}: a V0 net (layers {{ layer {{ ... }} }}) with input_shape; Caffe's "
                "V0 upgrade (UpgradeV0Net) keeps only input and input_dim, so the inputs get no "
                "blob and Caffe refuses the net ('Unknown bottom blob'); give input_dim instead")
        _upgrade_v0_net(net, source, notes)
    _upgrade_data_transformation(net)
    if len(net.layers):
        fmt = "V1" if fmt == "V2" else fmt
        if len(net.layer):
            raise PrototxtError(
                f"{source}: has both V1 'layers' ({len(net.layers)}) and V2 'layer' "
                f"({len(net.layer)}) entries; Caffe refuses to upgrade such a net "
                "(upgrade_proto.cpp: 'inconsistent NetParameter'); use 'layer' entries only")
        _upgrade_v1_net(net, source)
    _upgrade_input_fields(net, source, notes)
    return NetDefinition(net=net, source=source, format=fmt, notes=notes)


def _upgrade_v0_net(net: caffe_pb2.NetParameter, source: str, notes: list[str]) -> None:
    layers = _fold_padding_layers(net, source)
    del net.layers[:]
    for old in layers:
        net.layers.add().CopyFrom(_upgrade_v0_layer(old, source, notes))


def _fold_padding_layers(net: caffe_pb2.NetParameter, source: str) -> list[V1]:
    """Drop V0 ``padding`` layers, moving their ``pad`` into the conv/pool layer that reads them."""
    last_producer: dict[str, int] = {name: -1 for name in net.input}
    kept: list[V1] = []
    for index, connection in enumerate(net.layers):
        v0 = connection.layer
        if v0.type != "padding":
            kept.append(V1())
            kept[-1].CopyFrom(connection)
        for slot, blob in enumerate(connection.bottom):
            if blob not in last_producer:
                raise PrototxtError(f"{source}: layer '{v0.name}' reads unknown blob '{blob}'")
            producer = last_producer[blob]
            if producer < 0 or net.layers[producer].layer.type != "padding":
                continue
            pad_layer = net.layers[producer]
            if v0.type not in ("conv", "pool") or len(connection.bottom) != 1:
                raise PrototxtError(
                    f"{source}: V0 padding layer '{pad_layer.layer.name}' feeds layer "
                    f"'{v0.name}' of type '{v0.type}'; expected a single-input conv or pool layer")
            kept[-1].layer.pad = pad_layer.layer.pad
            kept[-1].bottom[slot] = pad_layer.bottom[0]
        for blob in connection.top:
            last_producer[blob] = index
    return kept


def _upgrade_v0_layer(connection: V1, source: str, notes: list[str]) -> V1:
    v0 = connection.layer
    layer = V1(bottom=connection.bottom, top=connection.top)
    if v0.HasField("name"):
        layer.name = v0.name
    if v0.HasField("type"):
        if v0.type not in V0_TYPES:
            raise PrototxtError(f"{source}: V0 layer '{v0.name}' has unknown type '{v0.type}'; "
                                f"expected one of {sorted(V0_TYPES)}")
        layer.type = V1.LayerType.Value(V0_TYPES[v0.type])
    layer.blobs.extend(v0.blobs)
    layer.blobs_lr.extend(v0.blobs_lr)
    layer.weight_decay.extend(v0.weight_decay)
    for descriptor, value in v0.ListFields():
        name = descriptor.name
        table = _V0_FIELDS.get(name, _V0_MESSAGES.get(name))
        if table is None:
            continue
        if None not in table and v0.type not in table:
            # UpgradeV0LayerParameter logs "Unknown parameter" and Caffe goes on without it
            notes.append(f"{source}: V0 layer '{v0.name}' of type '{v0.type}' has parameter "
                         f"'{name}', which Caffe takes only for {sorted(table)}; as Caffe does "
                         "(it logs an error and goes on), it is ignored")
            continue
        target = table[None] if None in table else table[v0.type]
        if name in _V0_FIELDS:
            _set_scalar(getattr(layer, target[0]), target[1], value)
        else:
            getattr(layer if target is None else getattr(layer, target), name).CopyFrom(value)
    return layer


def _set_scalar(message, name: str, value) -> None:
    target = message.DESCRIPTOR.fields_by_name[name]
    if target.is_repeated:
        getattr(message, name).append(value)
    else:
        setattr(message, name, value)


def _upgrade_data_transformation(net: caffe_pb2.NetParameter) -> None:
    for layer in net.layers:
        type_name = V1.LayerType.Name(layer.type) if layer.HasField("type") else ""
        if type_name not in _TRANSFORM_LAYERS:
            continue
        params = getattr(layer, _TRANSFORM_LAYERS[type_name])
        for name in _TRANSFORM_FIELDS:
            if params.HasField(name):
                setattr(layer.transform_param, name, getattr(params, name))
                params.ClearField(name)


def _upgrade_v1_net(net: caffe_pb2.NetParameter, source: str) -> None:
    upgraded = [_upgrade_v1_layer(layer, source) for layer in net.layers]
    del net.layers[:]
    del net.layer[:]
    net.layer.extend(upgraded)


def _upgrade_v1_layer(old: V1, source: str) -> caffe_pb2.LayerParameter:
    layer = caffe_pb2.LayerParameter(bottom=old.bottom, top=old.top, name=old.name)
    layer.include.extend(old.include)
    layer.exclude.extend(old.exclude)
    if old.HasField("type"):
        type_name = V1.LayerType.Name(old.type)
        if type_name not in V1_TYPE_NAMES:
            raise PrototxtError(f"{source}: V1 layer '{old.name}' has type {type_name}, which "
                                "Caffe cannot upgrade to a V2 layer type")
        layer.type = V1_TYPE_NAMES[type_name]
    layer.blobs.extend(old.blobs)
    _upgrade_param_specs(old, layer)
    layer.loss_weight.extend(old.loss_weight)
    layer.unparsed.extend(old.unparsed)
    v2_fields = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    for descriptor, value in old.ListFields():
        if descriptor.name.endswith("_param") and descriptor.name in v2_fields:
            getattr(layer, descriptor.name).CopyFrom(value)
    return layer


def _upgrade_param_specs(old: V1, layer: caffe_pb2.LayerParameter) -> None:
    count = max(len(old.param), len(old.blob_share_mode), len(old.blobs_lr),
                len(old.weight_decay))
    for i in range(count):
        spec = layer.param.add()
        if i < len(old.param):
            spec.name = old.param[i]
        if i < len(old.blob_share_mode):
            mode = V1.DimCheckMode.Name(old.blob_share_mode[i])
            spec.share_mode = caffe_pb2.ParamSpec.DimCheckMode.Value(mode)
        if i < len(old.blobs_lr):
            spec.lr_mult = old.blobs_lr[i]
        if i < len(old.weight_decay):
            spec.decay_mult = old.weight_decay[i]


def _upgrade_input_fields(net: caffe_pb2.NetParameter, source: str, notes: list[str]) -> None:
    """Turn ``input`` + ``input_dim``/``input_shape`` into one ``Input`` layer named 'input'."""
    if not len(net.input):
        if len(net.input_dim) or len(net.input_shape):
            raise PrototxtError(f"{source}: input_dim/input_shape given without any 'input' name")
        return
    names, dims, shapes = list(net.input), list(net.input_dim), list(net.input_shape)
    # UpgradeNetInput reads input_shape(i) / input_dim(4i .. 4i + 3) for every input i: extras
    # are ignored, missing ones are read past the end of the field (undefined), so refused
    if shapes and len(shapes) < len(names):
        raise PrototxtError(f"{source}: {len(names)} inputs but {len(shapes)} input_shape "
                            "entries; Caffe reads one input_shape per input (past the end of "
                            "the field here), so give one per input")
    if not shapes and dims and len(dims) < 4 * len(names):
        raise PrototxtError(f"{source}: {len(names)} inputs but {len(dims)} input_dim values; "
                            "Caffe reads 4 per input (past the end of the field here), so give "
                            f"{4 * len(names)}")
    extra = len(shapes) - len(names) if shapes else len(dims) - 4 * len(names) if dims else 0
    if extra > 0:
        what = "input_shape entries" if shapes else "input_dim values"
        notes.append(f"{source}: {extra} {what} beyond the {len(names)} input(s) are ignored, "
                     "as Caffe's UpgradeNetInput ignores them")
    layer = caffe_pb2.LayerParameter(name="input", type="Input", top=names)
    for i in range(len(names)):
        if shapes:
            layer.input_param.shape.add().CopyFrom(shapes[i])
        elif dims:
            layer.input_param.shape.add(dim=dims[4 * i:4 * i + 4])
    existing = list(net.layer)
    del net.layer[:]
    net.layer.append(layer)
    net.layer.extend(existing)
    net.ClearField("input")
    net.ClearField("input_dim")
    net.ClearField("input_shape")
