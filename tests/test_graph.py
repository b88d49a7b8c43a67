"""Reading, upgrading, phase selection, the layer graph and the public call conventions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import caffe2torch
from caffe2torch.errors import GraphError, PrototxtError, ShapeError, UnsupportedLayerError
from oracle import CORPUS, require_shared

CONV = """
layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{top}"
  convolution_param {{ num_output: {n} kernel_size: 3 pad: 1 }} }}
"""
RELU = 'layer {{ name: "{name}" type: "ReLU" bottom: "{blob}" top: "{blob}" }}\n'


def test_v0_v1_v2_lenet_build_the_same_graph():
    require_shared()
    v0 = caffe2torch.load_graph(CORPUS / "bvlc_lenet_deploy_v0_legacy.prototxt")
    v2 = caffe2torch.load_graph(CORPUS / "bvlc_lenet_mnist_deploy.prototxt")
    assert v0.definition.format == "V0" and v2.definition.format == "V2"
    assert [(n.name, n.type) for n in v0.layers][1:] == [(n.name, n.type) for n in v2.layers][1:]
    assert v0.blob("prob").shape == v2.blob("prob").shape == (64, 10)


def test_v0_padding_layers_fold_into_the_next_conv():
    require_shared()
    graph = caffe2torch.load_graph(CORPUS / "bvlc_caffenet_imagenet_val_v0_legacy.prototxt",
                                   input_shapes={"data": (2, 3, 227, 227)})
    assert "padding" not in {n.type for n in graph.layers}
    conv2 = graph.layer("conv2").param.convolution_param
    assert list(conv2.pad) == [2] and conv2.group == 2
    assert graph.blob("fc8").shape == (2, 1000)


@pytest.mark.parametrize("style", ["input_dim", "input_shape", "layer"])
def test_input_styles_and_several_inputs(write_net, style):
    declarations = {
        "input_dim": 'input: "a" input_dim: 2 input_dim: 3 input_dim: 5 input_dim: 7\n'
                     'input: "b" input_dim: 2 input_dim: 4 input_dim: 5 input_dim: 7\n',
        "input_shape": 'input: "a" input_shape { dim: 2 dim: 3 dim: 5 dim: 7 }\n'
                       'input: "b" input_shape { dim: 2 dim: 4 dim: 5 dim: 7 }\n',
        "layer": 'layer { name: "in" type: "Input" top: "a" top: "b" input_param {'
                 ' shape { dim: 2 dim: 3 dim: 5 dim: 7 } shape { dim: 2 dim: 4 dim: 5 dim: 7 } } }\n',
    }
    path = write_net(declarations[style] + 'layer { name: "cat" type: "Concat" bottom: "a" '
                     'bottom: "b" top: "cat" }')
    net = caffe2torch.build(path)
    assert net.caffe.input_names == ["a", "b"]
    a, b = torch.ones(2, 3, 5, 7), torch.zeros(2, 4, 5, 7)
    assert net(a, b).shape == (2, 7, 5, 7)
    assert torch.equal(net(b=b, a=a), net(a, b))


def test_phase_rules_and_train_layers_dropped_with_a_note():
    require_shared()
    path = CORPUS / "bvlc_lenet_mnist_train_test.prototxt"
    graph = caffe2torch.load_graph(path, input_shapes={"data": (4, 1, 28, 28)})
    names = [n.name for n in graph.layers]
    assert names.count("mnist") == 1  # only the TEST-phase data layer
    assert "loss" not in names and "accuracy" not in names
    assert any("'loss'" in note and "train-time" in note for note in graph.notes)
    assert [graph.blobs[b].name for b in graph.inputs] == ["data"]  # label only fed the loss
    assert [graph.blobs[b].name for b in graph.outputs] == ["ip2"]


def test_data_layer_input_needs_a_shape_from_the_caller():
    require_shared()
    with pytest.raises(ShapeError, match=r"input 'data'.*input_shapes="):
        caffe2torch.load_graph(CORPUS / "bvlc_lenet_mnist_train_test.prototxt")


def test_in_place_blobs_fan_out_and_outputs(write_net):
    text = 'input: "data" input_shape { dim: 2 dim: 3 dim: 5 dim: 7 }\n'
    text += CONV.format(name="conv1", bottom="data", top="conv1", n=4)
    text += RELU.format(name="relu1", blob="conv1")
    text += CONV.format(name="left", bottom="conv1", top="left", n=2)
    text += CONV.format(name="right", bottom="conv1", top="right", n=3)
    net = caffe2torch.build(write_net(text))
    assert net.caffe.output_names == ["left", "right"]
    x = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        left, right = net(x)
        blobs = net(x, outputs=["conv1", "left"])
        before_relu = net.layer_outputs(x, layers=["conv1"])["conv1"][0]
    assert torch.equal(blobs["left"], left)
    assert torch.equal(blobs["conv1"], torch.relu(before_relu))  # the value after relu1
    assert float(before_relu.min()) < 0
    assert "relu1 = self.relu1(conv1)" in net.code


def test_graph_problems_are_reported_together(write_net):
    text = 'input: "data" input_shape { dim: 1 dim: 3 dim: 5 dim: 5 }\n'
    text += CONV.format(name="a", bottom="data", top="x", n=2)
    text += CONV.format(name="b", bottom="nowhere", top="y", n=2)
    text += CONV.format(name="c", bottom="data", top="x", n=2)
    text += 'layer { name: "weird" type: "FancyLayer" bottom: "x" top: "z" }\n'
    text += CONV.format(name="d", bottom="later", top="w", n=2)
    text += CONV.format(name="e", bottom="data", top="later", n=2)
    with pytest.raises(GraphError) as err:
        caffe2torch.build(write_net(text))
    message = str(err.value)
    assert "4 problem(s)" in message
    for fragment in ("'b'", "'nowhere'", "'c'", "already produces", "'weird'", "FancyLayer",
                     "'d'", "only later"):
        assert fragment in message


def test_unsupported_types_fail_once_with_the_full_list(write_net):
    text = 'input: "data" input_shape { dim: 1 dim: 3 dim: 5 dim: 5 }\n'
    text += 'layer { name: "p" type: "PriorBoxish" bottom: "data" top: "p" }\n'
    text += 'layer { name: "q" type: "Permutish" bottom: "p" top: "q" }\n'
    with pytest.raises(UnsupportedLayerError, match=r"(?s)'p'.*PriorBoxish.*'q'.*Permutish"):
        caffe2torch.build(write_net(text))
    graph = caffe2torch.load_graph(write_net(text), check=False)
    assert len(graph.unsupported) == 2


def test_syntax_error_names_file_line_and_column(write_net):
    path = write_net('name: "x"\nlayer {\n  name: "a"\n  type: "ReLU"\n  bottom: \n}\n')
    with pytest.raises(PrototxtError, match=rf"{path}:6:1"):
        caffe2torch.build(path)
    # A field no schema knows is not a syntax error: the build names it (a fork's block).
    path = write_net('layer { name: "a" typo_field: 3 }')
    with pytest.raises(UnsupportedLayerError, match=r"'typo_field' \(line 1\)"):
        caffe2torch.build(path)


def test_missing_and_binary_files_are_clear_errors(tmp_path):
    with pytest.raises(PrototxtError, match="cannot read"):
        caffe2torch.build(tmp_path / "absent.prototxt")
    binary = tmp_path / "binary.prototxt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(PrototxtError, match="not a text prototxt"):
        caffe2torch.build(binary)


def test_input_shapes_override_and_unknown_names(write_net):
    text = 'input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
    text += CONV.format(name="c", bottom="data", top="c", n=2)
    path = write_net(text)
    graph = caffe2torch.load_graph(path, input_shapes={"data": (3, 3, 6, 10)})
    assert graph.blob("c").shape == (3, 2, 6, 10)
    with pytest.raises(ShapeError, match="'image'.*not inputs"):
        caffe2torch.load_graph(path, input_shapes={"image": (1, 3, 8, 8)})


def test_unknown_blob_name_in_outputs(write_net):
    text = 'input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
    text += CONV.format(name="c", bottom="data", top="c", n=2)
    net = caffe2torch.build(write_net(text))
    with pytest.raises(caffe2torch.Caffe2TorchError, match="no blob named"):
        net(torch.zeros(1, 3, 8, 8), outputs=["fc7"])


def test_layer_names_that_are_not_identifiers(write_net):
    text = 'input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
    text += CONV.format(name="inception_3a/1x1", bottom="data", top="inception_3a/1x1", n=2)
    text += CONV.format(name="2nd", bottom="inception_3a/1x1", top="out", n=2)
    text += CONV.format(name="forward", bottom="out", top="fwd", n=2)
    net = caffe2torch.build(write_net(text))
    keys = list(net.state_dict())
    assert "inception_3a_1x1.weight" in keys and "l_2nd.weight" in keys
    assert "forward_.weight" in keys
    assert net(torch.zeros(1, 3, 8, 8)).shape == (1, 2, 8, 8)
    assert np.isfinite(net(torch.ones(1, 3, 8, 8)).detach().numpy()).all()


def test_in_place_relu_keeps_every_value_readable(write_net):
    """ReLU after a convolution runs in place in the forward (as Caffe's does); the value it
    overwrites stays readable through layer_outputs, and outputs= gives Caffe's final blob."""
    path = write_net('input: "data" input_shape { dim: 2 dim: 3 dim: 7 dim: 6 }\n'
                     'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"\n'
                     '  convolution_param { num_output: 4 kernel_size: 3 } }\n'
                     'layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }\n'
                     'layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"\n'
                     '  inner_product_param { num_output: 3 } }\n'
                     'layer { name: "leaky" type: "ReLU" bottom: "ip" top: "ip"\n'
                     '  relu_param { negative_slope: 0.25 } }\n')
    net = caffe2torch.build(path)
    assert net.relu.inplace and net.leaky.inplace
    x = torch.randn(2, 3, 7, 6, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        raw = torch.nn.functional.conv2d(x, net.conv.weight, net.conv.bias)
        layers = net.layer_outputs(x, layers=["conv", "relu", "ip", "leaky"])
        blobs = net(x, outputs=["conv", "ip"])
        out = net(x)
    torch.testing.assert_close(layers["conv"][0], raw)
    torch.testing.assert_close(layers["relu"][0], raw.clamp_min(0))
    torch.testing.assert_close(blobs["conv"], raw.clamp_min(0))
    ip = raw.clamp_min(0).flatten(1) @ net.ip.weight.T + net.ip.bias
    torch.testing.assert_close(layers["ip"][0], ip)
    torch.testing.assert_close(out, torch.nn.functional.leaky_relu(ip, 0.25))
    torch.testing.assert_close(blobs["ip"], out)
