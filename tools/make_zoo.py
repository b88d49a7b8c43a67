"""Write the model zoo's prototxt files from the published architectures (dev-time tool).

    python tools/make_zoo.py            # rewrites model_zoo/*/deploy.prototxt

Each net is built as a NetParameter with the official layer names, so official weights bind.
"""
from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format

from caffe2torch.proto import caffe_pb2

V1 = caffe_pb2.V1LayerParameter
ZOO = Path(__file__).resolve().parents[1] / "model_zoo"
VGG16_BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))


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
        pool.pooling_param.pool = caffe_pb2.PoolingParameter.MAX
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


NETS = {
    "vgg_face": lambda: vgg16_v1("VGG_FACE_16_layers", 2622),
}


def write_all() -> None:
    for entry, make in NETS.items():
        path = ZOO / entry / "deploy.prototxt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_deploy_text(make()))


def _deploy_text(net: caffe_pb2.NetParameter) -> str:
    """Net-level fields (name, inputs) first, then the layers, as deploy files are laid out."""
    head = caffe_pb2.NetParameter()
    head.CopyFrom(net)
    head.ClearField("layers")
    head.ClearField("layer")
    body = caffe_pb2.NetParameter(layers=net.layers, layer=net.layer)
    return text_format.MessageToString(head) + text_format.MessageToString(body)


if __name__ == "__main__":
    write_all()
