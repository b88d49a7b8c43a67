"""The deploy form of a net: its kept layers after an Input layer, as a V2 NetParameter."""
from __future__ import annotations

from google.protobuf import text_format

from caffe2torch.ir.graph import NetGraph
from caffe2torch.proto import caffe_pb2


def deploy_net(graph: NetGraph) -> caffe_pb2.NetParameter:
    """V2 deploy definition: one Input layer with the inferred input shapes, then every kept layer.

    Data layers, train-only layers and phase rules are gone, so Caffe, OpenCV and caffe2torch
    all read the same network.
    """
    net = caffe_pb2.NetParameter(name=graph.name)
    inputs = net.layer.add(name="input", type="Input")
    for blob_id in graph.inputs:
        blob = graph.blobs[blob_id]
        inputs.top.append(blob.name)
        inputs.input_param.shape.add(dim=list(blob.shape or ()))
    for node in graph.layers:
        if node.role == "input":
            continue
        layer = net.layer.add()
        layer.CopyFrom(node.param)
        layer.ClearField("include")
        layer.ClearField("exclude")
        layer.ClearField("blobs")
    return net


def deploy_prototxt(graph: NetGraph) -> str:
    return text_format.MessageToString(deploy_net(graph))
