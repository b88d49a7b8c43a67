"""Bad prototxts end in our errors, naming the layer: each case here is an escape that the
prototxt fuzzer (bench/fuzz_prototxt.py) or the hardening issue found, kept as a regression."""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import caffe2torch
from caffe2torch.errors import Caffe2TorchError, GraphError, NetSizeError, ShapeError
from caffe2torch.ir.memory import available_memory, check_memory, format_bytes
from caffe2torch.layers.registry import Converter, register_converter, unregister_converter

INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: %s } } }\n'


def _net(write_net, body: str, dims: str = "2 dim: 3 dim: 8 dim: 9"):
    return write_net(INPUT % dims + body)


# --- a layer listing one top twice (IndexError in _produce) ------------------------------------

def test_a_top_listed_twice_is_a_graph_error_naming_layer_and_top(write_net):
    path = _net(write_net, 'layer { name: "s" type: "Split" bottom: "data" top: "a" top: "a" }\n')
    with pytest.raises(GraphError, match=r"layer 's' \(Split\) lists top 'a' twice \(tops 0 and "
                                         r"1\); Caffe rejects this"):
        caffe2torch.build(path)
    graph = caffe2torch.load_graph(path, check=False)
    assert any("lists top 'a' twice" in p for p in graph.problems)


def test_an_in_place_top_listed_again_is_rejected_as_caffe_does(write_net):
    """Caffe's AppendTop: top 0 is in place (the bottom at index 0); top 1 is not, and the blob
    already exists, so Caffe stops with 'produced by multiple sources'."""
    path = _net(write_net, 'layer { name: "r" type: "ReLU" bottom: "data" top: "data" '
                           'top: "data" }\n')
    with pytest.raises(GraphError, match=r"layer 'r' \(ReLU\) lists top 'data' twice"):
        caffe2torch.load_graph(path)


# --- sizes that cannot fit in memory fail before allocating ------------------------------------

_HUGE = 2147483647


@pytest.mark.parametrize(("body", "layer", "count"), [
    (('layer { name: "conv" type: "Convolution" bottom: "data" top: "c" '
      f'convolution_param {{ num_output: {_HUGE} kernel_size: 3 }} }}\n'),
     "conv (Convolution)", _HUGE * 3 * 3 * 3 + _HUGE),
    (('layer { name: "fc" type: "InnerProduct" bottom: "data" top: "f" '
      f'inner_product_param {{ num_output: {_HUGE} }} }}\n'),
     "fc (InnerProduct)", _HUGE * 3 * 8 * 9 + _HUGE),
    (('layer { name: "emb" type: "Embed" bottom: "data" top: "e" '
      f'embed_param {{ input_dim: {_HUGE} num_output: 1000 }} }}\n'),
     "emb (Embed)", _HUGE * 1000 + 1000),
], ids=["convolution", "inner_product", "embed"])
def test_parameters_beyond_memory_fail_before_allocating(write_net, body, layer, count):
    path = _net(write_net, body)
    name, kind = layer.split()
    with pytest.raises(NetSizeError) as caught:
        caffe2torch.build(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"layer '{name}' {kind} {count:,} parameters ({format_bytes(4 * count)})" in message
    assert re.search(r"but [\d.]+ [kMGTP]?B of memory is available", message)
    with pytest.raises(NetSizeError, match=f"layer '{name}'"):
        caffe2torch.write_random_caffemodel(path, path.with_suffix(".caffemodel"))
    graph = caffe2torch.load_graph(path)  # inspecting the net (info) still works
    assert graph.layer(name).name == name


def test_huge_input_dims_reach_the_parameter_check(write_net):
    """An InnerProduct after an Input of 2**31 - 1 channels: the weight is the problem."""
    path = _net(write_net, 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "f" '
                           'inner_product_param { num_output: 10 } }\n',
                dims=f"1 dim: {_HUGE} dim: 4 dim: 4")
    with pytest.raises(NetSizeError, match=r"layer 'fc' \(InnerProduct\) 343,597,383,530 "):
        caffe2torch.build(path)


def test_check_memory_compares_with_the_memory_given(write_net):
    path = _net(write_net, 'layer { name: "conv" type: "Convolution" bottom: "data" top: "c" '
                           'convolution_param { num_output: 4 kernel_size: 3 } }\n')
    graph = caffe2torch.load_graph(path)
    check_memory(graph, available=4 * (4 * 27 + 4))
    with pytest.raises(NetSizeError, match=r"needs 112 parameters \(448 B\) but 447 B of memory"):
        check_memory(graph, available=447)


def test_available_memory_is_positive_and_below_the_machine():
    import os
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert 0 < available_memory() <= total


class _Greedy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.table = torch.empty(2**50)  # 4 PiB: no machine allocates this

    def forward(self, x):
        return x


class _GreedyConverter(Converter):
    caffe_type = "GreedyTest"

    def output_shapes(self, layer, inputs):
        return [inputs[0]]

    def build(self, layer, inputs):
        return _Greedy()


def test_an_allocation_the_estimate_misses_names_the_layer(write_net):
    register_converter(_GreedyConverter)
    try:
        path = _net(write_net, 'layer { name: "g" type: "GreedyTest" bottom: "data" top: "g" }\n')
        with pytest.raises(NetSizeError, match=r"layer 'g' \(GreedyTest\) with bottoms "
                                               r"\[\(2, 3, 8, 9\)\] could not allocate"):
            caffe2torch.build(path)
    finally:
        unregister_converter("GreedyTest")


# --- fillers Caffe's random number functions refuse --------------------------------------------

@pytest.mark.parametrize(("body", "match"), [
    (('layer { name: "p" type: "PReLU" bottom: "data" top: "p" '
      'prelu_param { filler { type: "gaussian" std: nan } } }\n'),
     r"layer 'p' \(PReLU\).*gaussian filler has mean 0.0 and std nan; expected finite"),
    (('layer { name: "p" type: "PReLU" bottom: "data" top: "p" '
      'prelu_param { filler { type: "gaussian" std: -1 } } }\n'),
     r"layer 'p' \(PReLU\).*std -1.0; expected finite values with std > 0"),
    (('layer { name: "s" type: "Scale" bottom: "data" top: "s" '
      'scale_param { filler { type: "uniform" min: 1 max: 0 } } }\n'),
     (r"layer 's' \(Scale\).*uniform filler has min 1.0 and max 0.0; expected finite values "
      r"with min <= max")),
    (('layer { name: "b" type: "Bias" bottom: "data" top: "b" '
      'bias_param { filler { type: "uniform" min: 0 max: inf } } }\n'),
     r"layer 'b' \(Bias\).*uniform filler has min 0.0 and max inf"),
], ids=["gaussian_nan", "gaussian_negative", "uniform_reversed", "uniform_infinite"])
def test_random_filler_bounds_are_checked_as_caffe_does(write_net, body, match):
    with pytest.raises(ShapeError, match=match):
        caffe2torch.build(_net(write_net, body))


@pytest.mark.parametrize("ratio", ["0", "-2", "inf", "nan"])
def test_prior_box_aspect_ratio_must_be_positive_and_finite(write_net, ratio):
    """Was a ZeroDivisionError (1 / ratio with flip); Caffe has no CHECK and makes boxes of
    side min_size * sqrt(ratio): infinite or NaN."""
    path = _net(write_net, 'layer { name: "pb" type: "PriorBox" bottom: "data" top: "pb" '
                           f'prior_box_param {{ min_size: 4 aspect_ratio: {ratio} flip: true '
                           'img_size: 32 } }\n')
    with pytest.raises(ShapeError, match=r"layer 'pb' \(PriorBox\).*aspect_ratio .*; expected a "
                                         "finite ratio > 0"):
        caffe2torch.load_graph(path)


@pytest.mark.parametrize("layer", [
    'layer { name: "f" type: "Flatten" top: "f" }',
    'layer { name: "s" type: "Split" top: "a" top: "b" }',
    'layer { name: "r" type: "Reshape" bottom: "data" }',
    'layer { name: "c" type: "Concat" bottom: "nowhere" top: "nowhere" }',
])
def test_memory_sharing_layers_with_missing_bottoms_or_tops(write_net, layer):
    """Split / Flatten / Reshape / Concat share their bottom's memory; a missing bottom or top is
    our error naming the layer, not an IndexError from the sharing rule (fuzzer escape)."""
    path = write_net('input: "data" input_shape { dim: 2 dim: 3 dim: 4 dim: 5 }\n' + layer)
    with pytest.raises(Caffe2TorchError, match=r"layer '[fsrc]'"):
        caffe2torch.build(path)
