"""The README's support table is generated from the registry; custom converters register."""
from __future__ import annotations

import pytest
import torch

import caffe2torch
from caffe2torch.layers.registry import registered_types, unregister_converter
from caffe2torch.support import support_rows
from oracle import ROOT

STANDARD = {
    "Convolution", "Deconvolution", "Pooling", "InnerProduct", "LRN", "Im2col", "SPP",
    "BatchNorm", "Scale", "Bias", "MVN", "ReLU", "PReLU", "ELU", "Sigmoid", "TanH", "AbsVal",
    "BNLL", "Power", "Exp", "Log", "Threshold", "Clip", "Swish", "Concat", "Slice", "Split",
    "Flatten", "Reshape", "Crop", "Tile", "Eltwise", "ArgMax", "Reduction", "Embed", "Silence",
    "Dropout", "Softmax", "Parameter",
}


def test_every_standard_layer_has_a_converter():
    assert STANDARD <= set(registered_types())


def test_readme_table_is_generated_and_current():
    import subprocess
    import sys
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "support_table.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    readme = (ROOT / "README.md").read_text()
    for type_name, *_ in support_rows():
        assert f"| {type_name} |" in readme


def test_custom_converter_from_user_code(write_net):
    class Mish(torch.nn.Module):
        def forward(self, x):
            return x * torch.tanh(torch.nn.functional.softplus(x))

    @caffe2torch.register_converter
    class MishConverter(caffe2torch.Converter):
        caffe_type = "MishForTest"

        def output_shapes(self, layer, inputs):
            return [inputs[0]]

        def build(self, layer, inputs):
            return Mish()

    try:
        path = write_net('input: "data" input_shape { dim: 2 dim: 3 dim: 4 dim: 5 }\n'
                         'layer { name: "m" type: "MishForTest" bottom: "data" top: "m" }')
        net = caffe2torch.build(path)
        x = torch.linspace(-3, 3, 120).reshape(2, 3, 4, 5)
        assert torch.allclose(net(x), Mish()(x))
        with pytest.raises(ValueError, match="already registered"):
            caffe2torch.register_converter(MishConverter)
    finally:
        unregister_converter("MishForTest")
