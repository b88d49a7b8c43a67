"""visualize: filter grids, activation grids and heatmaps, rendered and looked at."""
from __future__ import annotations

import matplotlib.cbook
import numpy as np
import pytest
from PIL import Image

import caffe2torch
from caffe2torch.cli import main
from caffe2torch.research import activation_grid, filter_grid, heatmap_overlay, visualize
from caffe2torch.research.figures import VisualizeError, layer_weights

HOPPER = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)

TINY = """name: "tiny"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 1 dim: 3 dim: 40 dim: 36 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 12 kernel_size: 5 stride: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 10 kernel_size: 3 pad: 1 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc7" type: "InnerProduct" bottom: "pool2" top: "fc7"
  inner_product_param { num_output: 6 } }
"""


@pytest.fixture
def tiny(write_net, tmp_path):
    proto = write_net(TINY, "tiny.prototxt")
    weights = tmp_path / "tiny.caffemodel"
    caffe2torch.write_random_caffemodel(proto, weights, seed=3)
    return proto, weights


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


def test_filter_grid_normalises_each_filter_and_shows_bgr_as_rgb():
    weights = np.zeros((5, 3, 3, 3), np.float32)
    weights[:, 0] = 1.0  # only the first (blue, in BGR) input channel
    weights[:, :, 0, 0] = -1.0  # one dark corner pixel per filter
    grid = filter_grid(weights, "BGR", cell=30, pad=2)
    assert grid.shape == (2 * (30 + 2) + 2, 3 * (30 + 2) + 2, 3) and grid.dtype == np.uint8
    tile = grid[2 + 15:2 + 30, 2 + 15:2 + 30]  # away from the dark corner
    assert (tile[..., 2] == 255).all()  # the stored first (B) channel is shown as blue
    assert (tile[..., 0] == 128).all() and (tile[..., 1] == 128).all()  # zeros: mid-gray
    assert (grid[2:12, 2:12] == 0).all()  # the minimum maps to 0
    gray = filter_grid(np.random.default_rng(0).standard_normal((4, 6, 5, 5)), cell=10)
    assert (gray[..., 0] == gray[..., 1]).all()  # more than 3 inputs: gray


def test_heatmap_is_hot_where_the_activation_is_high():
    image = np.full((60, 80, 3), 128, np.uint8)
    activation = np.zeros((4, 6, 8), np.float32)
    activation[:, :2, :2] = 5.0  # top-left
    overlay = heatmap_overlay(image, activation, alpha=0.6)
    assert overlay.shape == image.shape
    top_left, bottom_right = overlay[2:10, 2:10].mean(axis=(0, 1)), overlay[-10:, -10:].mean(
        axis=(0, 1))
    assert top_left[0] > top_left[2] + 60  # red (jet high)
    assert bottom_right[2] > bottom_right[0] + 40  # blue (jet low)
    assert np.abs(overlay.astype(int) - image).mean() > 20


def test_activation_grid_content():
    rng = np.random.default_rng(2)
    grid = activation_grid(rng.standard_normal((20, 7, 9)).astype(np.float32), max_channels=16)
    assert grid.shape[0] > 4 * 7 and grid.std() > 30
    with pytest.raises(VisualizeError, match="expected"):
        activation_grid(np.zeros((3, 4)))


def test_visualize_writes_three_figures_that_show_the_photograph(tiny, tmp_path):
    proto, weights = tiny
    net = caffe2torch.build(proto, weights)
    figures = visualize(net, HOPPER, tmp_path / "figs")
    assert figures.layer == "pool2" and figures.filter_layer == "conv1"
    filters, activations, heatmap = (_png(p) for p in (figures.filters, figures.activations,
                                                        figures.heatmap))
    for image in (filters, activations, heatmap):
        assert image.shape[0] > 150 and image.shape[1] >= 400 and image.std() > 20
    np.testing.assert_array_equal(layer_weights(net, "conv1"),
                                  caffe2torch.read_caffemodel(weights)["conv1"].blobs[0].data)
    # the heatmap figure: the photograph (enlarged from 40x36) and the overlay side by side
    rows = np.where((heatmap < 250).any(axis=(1, 2)))[0]
    body = heatmap[rows[rows > 40]]
    columns = np.where((body < 250).any(axis=(0, 2)))[0]
    left = body[:, columns[0]:columns[0] + 200]
    right = body[:, columns[-1] - 199:columns[-1] + 1]
    assert left.std() > 30 and np.abs(left - right).mean() > 10


def test_visualize_cli_named_layers_and_errors(tiny, tmp_path, capsys):
    proto, weights = tiny
    argv = ["visualize", str(proto), "-w", str(weights), "--image", HOPPER,
            "-o", str(tmp_path / "out"), "--mean", "104,117,123"]
    assert main(argv + ["--layer", "conv2", "--filters", "conv2", "--channels", "4"]) == 0
    written = capsys.readouterr().out.split()
    assert [p.split("/")[-1] for p in written] == [
        "filters_conv2.png", "activations_conv2.png", "heatmap_conv2.png"]
    assert _png(written[1]).std() > 20
    assert main(argv + ["--layer", "fc7"]) == 1
    err = capsys.readouterr().err
    assert "'fc7' gives a 1x6 output" in err and "Traceback" not in err
    assert main(argv + ["--layer", "nope"]) == 1
    assert "last layers with spatial outputs: ['conv1', 'relu1', 'conv2', 'relu2', 'pool2']" in \
        capsys.readouterr().err
