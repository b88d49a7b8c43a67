"""Binding caffemodel blobs by layer name: legacy dims, one report of every problem, lenient mode."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import caffe2torch
from caffe2torch.errors import CaffemodelError, WeightsError
from caffe2torch.io.caffemodel import write_caffemodel

NET = """name: "small"
input: "data" input_shape { dim: 2 dim: 3 dim: 6 dim: 5 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc"
  inner_product_param { num_output: 7 } }
"""


@pytest.fixture
def small(write_net):
    return write_net(NET)


def _blobs(rng):
    return [("conv", "Convolution", [rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)]),
            ("fc", "InnerProduct", [rng.standard_normal((7, 4 * 4 * 3)), rng.standard_normal(7)])]


@pytest.mark.parametrize("fmt", ["V2", "V1"])
def test_weights_bind_by_name_in_both_layouts(small, tmp_path, rng, fmt):
    blobs = _blobs(rng)
    path = tmp_path / f"w_{fmt}.caffemodel"
    write_caffemodel(path, blobs, format=fmt)
    net = caffe2torch.build(small, weights=path)
    assert np.array_equal(net.conv.weight.detach().numpy(), blobs[0][2][0].astype(np.float32))
    assert np.array_equal(net.fc.bias.detach().numpy(), blobs[1][2][1].astype(np.float32))
    x = torch.from_numpy(rng.standard_normal((2, 3, 6, 5)).astype(np.float32))
    with torch.no_grad():
        conv = torch.nn.functional.conv2d(x, net.conv.weight, net.conv.bias)
        expected = conv.flatten(1) @ net.fc.weight.t() + net.fc.bias
        assert torch.allclose(net(x), expected, atol=1e-5)


def test_every_problem_is_listed_in_one_error(small, tmp_path, rng):
    path = tmp_path / "wrong.caffemodel"
    write_caffemodel(path, [
        ("conv", "Convolution", [rng.standard_normal((4, 3, 5, 5)), rng.standard_normal(4)]),
        ("extra", "Convolution", [rng.standard_normal((2, 2))]),
    ])
    with pytest.raises(WeightsError) as err:
        caffe2torch.build(small, weights=path)
    message = str(err.value)
    assert "'conv' (Convolution) blob 0" in message and "(4, 3, 5, 5)" in message
    assert "(4, 3, 3, 3)" in message
    assert "'fc'" in message and "no blobs in the file" in message
    assert "'extra'" in message and "no layer of the net" in message


def test_lenient_loads_what_fits_and_reports_the_rest(small, tmp_path, rng):
    path = tmp_path / "partial.caffemodel"
    write_caffemodel(path, _blobs(rng)[:1])
    net = caffe2torch.build(small, weights=path, strict=False)
    report = net.caffe.weights_report
    assert report.loaded == ["conv"] and len(report.missing) == 1 and not report.ok


def test_blob_count_mismatch(small, tmp_path, rng):
    path = tmp_path / "nobias.caffemodel"
    blobs = _blobs(rng)
    write_caffemodel(path, [(blobs[0][0], blobs[0][1], blobs[0][2][:1]), blobs[1]])
    with pytest.raises(WeightsError, match=r"'conv'.*1 blob\(s\).*expected 2"):
        caffe2torch.build(small, weights=path)


def test_caffemodel_of_another_net(small, tmp_path):
    vgg_like = tmp_path / "other.prototxt"
    vgg_like.write_text(NET.replace('"conv"', '"conv1_1"').replace('"fc"', '"fc8"'))
    other = tmp_path / "other.caffemodel"
    caffe2torch.write_random_caffemodel(vgg_like, other, seed=1)
    with pytest.raises(WeightsError, match=r"(?s)'conv'.*no blobs.*'conv1_1'.*no layer"):
        caffe2torch.build(small, weights=other)


@pytest.mark.parametrize("cut", [1, 17, -9])
def test_truncated_caffemodel(small, tmp_path, rng, cut):
    path = tmp_path / "cut.caffemodel"
    write_caffemodel(path, _blobs(rng))
    data = path.read_bytes()
    path.write_bytes(data[:cut] if cut > 0 else data[:cut])
    with pytest.raises(CaffemodelError, match=str(path)):
        caffe2torch.build(small, weights=path)


def test_prototxt_given_as_weights_is_rejected(small):
    with pytest.raises(CaffemodelError, match="net.prototxt"):
        caffe2torch.build(small, weights=small)


def test_round_trip_through_save_caffemodel(small, tmp_path, rng):
    source = tmp_path / "a.caffemodel"
    write_caffemodel(source, _blobs(rng))
    net = caffe2torch.build(small, weights=source)
    again = tmp_path / "b.caffemodel"
    caffe2torch.save_caffemodel(net, again)
    copy = caffe2torch.build(small, weights=again)
    for key, value in net.state_dict().items():
        assert torch.equal(value, copy.state_dict()[key])


def test_input_file_is_never_modified(small, tmp_path, rng):
    path = tmp_path / "w.caffemodel"
    write_caffemodel(path, _blobs(rng))
    before, text_before = path.read_bytes(), small.read_text()
    net = caffe2torch.build(small, weights=path)
    with torch.no_grad():
        net.conv.weight.add_(1.0)
    assert path.read_bytes() == before and small.read_text() == text_before


def test_layers_rebuilt_while_binding_keep_eval_mode(write_net, tmp_path):
    """BatchNorm has tensors besides its Caffe blobs, so binding builds it anew: still eval."""
    path = write_net('input: "data" input_shape { dim: 3 dim: 2 dim: 4 dim: 5 }\n'
                     'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" }')
    weights = tmp_path / "bn.caffemodel"
    caffe2torch.write_random_caffemodel(path, weights, seed=4)
    net = caffe2torch.build(path, weights=weights)
    assert not any(m.training for m in net.modules())
    x = torch.randn(3, 2, 4, 5, generator=torch.Generator().manual_seed(0))
    bn = net.bn
    expected = (x - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None]
                                                                 + 1e-5)
    assert torch.allclose(net(x), expected, atol=1e-5)
