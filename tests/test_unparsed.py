"""Fields no schema knows (forks' parameter blocks) never stop the parse: they are reported by
name and line, and custom converters can read them."""
from __future__ import annotations

import json

import pytest
import torch

import caffe2torch
from caffe2torch import Converter, register_converter
from caffe2torch.cli import main
from caffe2torch.errors import GraphError, PrototxtError, UnsupportedLayerError
from caffe2torch.io.prototxt import parse_prototxt
from caffe2torch.io.textblocks import ParamBlock, scan_text
from caffe2torch.layers.registry import unregister_converter

HEAD = 'name: "n"\ninput: "data"\ninput_shape { dim: 2 dim: 3 dim: 5 dim: 7 }\n'

FORK_NET = HEAD + """layer {
  name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 }
}
layer {
  name: "up" type: "MadeUpInterp" bottom: "conv1" top: "up"
  made_up_interp_param { zoom_factor: 2 pad_beg: -1 }
}
layer {
  name: "relu" type: "ReLU" bottom: "up" top: "up"
  relu_param { negative_slope: 0.1 fork_only_flag: true }
}
"""


def test_unknown_blocks_are_kept_with_their_text_and_line():
    net = parse_prototxt(FORK_NET)
    up, relu = net.layer[1], net.layer[2]
    assert [(e.path, e.line) for e in up.unparsed] == [("made_up_interp_param", 10)]
    assert "zoom_factor: 2" in up.unparsed[0].text and "pad_beg: -1" in up.unparsed[0].text
    assert [(e.path, e.line) for e in relu.unparsed] == [("relu_param.fork_only_flag", 14)]
    assert relu.relu_param.negative_slope == pytest.approx(0.1)  # known fields still parsed
    assert len(net.layer[0].unparsed) == 0


def test_build_reports_every_unknown_block_in_one_error(write_net):
    path = write_net(FORK_NET)
    with pytest.raises(UnsupportedLayerError) as err:
        caffe2torch.build(path)
    message = str(err.value)
    assert str(path) in message and "2 problem(s)" in message
    assert "layer 'up' has unsupported type 'MadeUpInterp'" in message
    assert "'made_up_interp_param' (line 10)" in message
    assert "layer 'relu' (ReLU): parameter block 'relu_param.fork_only_flag' (line 14)" in message


def test_info_shows_the_table_and_names_the_blocks(write_net, capsys):
    path = write_net(FORK_NET)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "conv1" in out and "MadeUpInterp (unsupported)" in out
    assert "'made_up_interp_param' (line 10)" in out and "relu_param.fork_only_flag" in out
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert any("made_up_interp_param" in p for p in info["unsupported"])


def test_a_misspelt_field_gets_a_suggestion(write_net):
    path = write_net(HEAD + 'layer { name: "c" type: "Convolution" bottom: "data" top: "c"\n'
                            '  convolution_param { num_outputs: 4 kernel_size: 3 } }\n')
    with pytest.raises(UnsupportedLayerError,
                       match=r"'convolution_param.num_outputs' \(line 5\).*did you mean "
                             r"'convolution_param.num_output'\?"):
        caffe2torch.build(path)


def test_net_level_unknown_field_is_a_problem(write_net):
    path = write_net(HEAD + "fork_net_option: 3\n")
    with pytest.raises(GraphError, match=r"net field 'fork_net_option' \(line 4\)"):
        caffe2torch.build(path)


def test_v1_layers_keep_their_unknown_blocks_through_the_upgrade(write_net):
    path = write_net(HEAD + 'layers { name: "r" type: RELU bottom: "data" top: "r"\n'
                            '  v1_fork_param { k: 1 } }\n')
    graph = caffe2torch.load_graph(path, check=False)
    assert graph.definition.format == "V1"
    assert any("'v1_fork_param' (line 5)" in p for p in graph.problems)


def test_syntax_errors_still_name_line_and_column(write_net):
    path = write_net(HEAD + 'layer { name: "a" fork_param { x: 1 } type: "ReLU" bottom: }\n')
    with pytest.raises(PrototxtError, match=rf"{path}:4:\d+"):
        caffe2torch.build(path)


def test_the_input_file_is_not_modified(write_net):
    path = write_net(FORK_NET)
    before = path.read_bytes()
    caffe2torch.load_graph(path, check=False)
    assert path.read_bytes() == before


class Mish(torch.nn.Module):
    def __init__(self, beta: float) -> None:
        super().__init__()
        self.beta = beta

    def forward(self, x):
        return x * torch.tanh(torch.nn.functional.softplus(x, beta=self.beta))


@pytest.fixture
def mish_converter():
    @register_converter
    class MishConverter(Converter):
        caffe_type = "Mish"
        param_blocks = ("mish_param",)

        def output_shapes(self, layer, inputs):
            return [inputs[0]]

        def build(self, layer, inputs):
            return Mish(layer.extra.block("mish_param").get("beta", 1.0))

    yield MishConverter
    unregister_converter("Mish")


@pytest.mark.parametrize("block, beta", [("mish_param { beta: 2 }", 2.0),
                                         ("mish_param { beta: 0.5 }", 0.5),
                                         ("", 1.0)])
def test_a_custom_converter_reads_its_own_block(write_net, mish_converter, block, beta):
    path = write_net(HEAD + f'layer {{ name: "m" type: "Mish" bottom: "data" top: "m" {block} }}\n')
    net = caffe2torch.build(path)
    x = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    expected = x * torch.tanh(torch.nn.functional.softplus(x, beta=beta))
    torch.testing.assert_close(net(x), expected)
    assert net.m.beta == beta


def test_a_custom_converter_does_not_excuse_other_blocks(write_net, mish_converter):
    path = write_net(HEAD + 'layer { name: "m" type: "Mish" bottom: "data" top: "m"\n'
                            '  mish_param { beta: 2 } other_param { a: 1 } }\n')
    with pytest.raises(UnsupportedLayerError,
                       match=r"'other_param' \(line 5\).*Mish converter does not read it$"):
        caffe2torch.build(path)


def _block(text: str) -> ParamBlock:
    return ParamBlock("p", scan_text(text), source="test")


@pytest.mark.parametrize("text, name, default, expected", [
    ("a: 3", "a", None, 3),
    ("a: 3", "a", 1.0, 3.0),
    ("a: -2.5e-1", "a", None, -0.25),
    ("a: 0x10", "a", None, 16),
    ("a: true", "a", None, True),
    ("a: 1", "a", False, True),
    ("a: MAX", "a", None, "MAX"),
    ('a: "x\\"y" "z"', "a", None, 'x"yz'),
    ("a: 1 a: 2", "a", None, 2),
    ("b: 1", "a", 7, 7),
])
def test_param_block_values(text, name, default, expected):
    value = _block(text).get(name, default)
    assert value == expected and type(value) is type(expected)


def test_param_block_lists_and_nesting():
    block = _block("r: [1, 2.5, -3] inner { s: 'q' deeper < t: 4 > } r: 5")
    assert block.get_all("r") == [1, 2.5, -3, 5]
    assert block.block("inner").get("s") == "q"
    assert block.block("inner").block("deeper").get("t") == 4
    assert not block.block("absent") and block.block("absent").get("x", 3) == 3
    assert list(block) == ["r", "inner"] and "inner" in block


@pytest.mark.parametrize("text, name, default", [
    ("a: 2.5", "a", 1), ("a: maybe", "a", True), ('a: "s"', "a", 1.0), ("a { }", "a", 1)])
def test_param_block_wrong_types_are_clear_errors(text, name, default):
    with pytest.raises(PrototxtError, match=r"test:1: p\.a"):
        _block(text).get(name, default)
