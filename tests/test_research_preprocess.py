"""Preprocessing the Caffe way: order of the steps, manifests, transform_param, mean files."""
from __future__ import annotations

import matplotlib.cbook
import numpy as np
import pytest
from oracle import CORPUS, ROOT, require_shared
from PIL import Image

import caffe2torch
from caffe2torch.preprocess import (
    PreprocessError,
    Preprocessing,
    default_preprocessing,
    list_images,
    load_image,
    parse_mean,
    parse_size,
    read_mean_file,
)
from caffe2torch.proto import caffe_pb2
from caffe2torch.zoo import get_entry

HOPPER = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)


def _image(rng, height=11, width=14) -> np.ndarray:
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _write_blobproto(path, array: np.ndarray) -> None:
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(array.shape)
    blob.data.extend(array.ravel().tolist())
    path.write_bytes(blob.SerializeToString())


def test_steps_in_caffe_order_crop_bgr_mean_scale(rng):
    rgb = _image(rng)
    prep = Preprocessing(size=None, crop=(7, 9), mean=[10.0, 20.0, 30.0], scale=0.5)
    out = prep(rgb)
    top, left = (11 - 7) // 2, (14 - 9) // 2
    expected = rgb[top:top + 7, left:left + 9].astype(np.float32).transpose(2, 0, 1)[::-1]
    expected = (expected - np.array([10, 20, 30], np.float32)[:, None, None]) * 0.5
    assert out.dtype == np.float32 and out.shape == (3, 7, 9)
    np.testing.assert_array_equal(out, expected)


def test_raw_scale_rgb_and_exact_resize(rng):
    rgb = _image(rng)
    prep = Preprocessing(size=(5, 6), channel_order="RGB", raw_scale=1.0)
    out = prep(rgb)
    resized = np.asarray(Image.fromarray(rgb).resize((6, 5), Image.Resampling.BILINEAR))
    assert out.shape == (3, 5, 6)
    np.testing.assert_allclose(out, resized.transpose(2, 0, 1) / 255.0, rtol=1e-6)


def test_shorter_side_resize_keeps_aspect_and_gray_nets_get_one_channel(rng):
    prep = Preprocessing(size=8, channels=1, scale=0.00390625)
    out = prep(_image(rng, 16, 24))
    assert out.shape == (1, 8, 12)
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_mean_image_is_cropped_at_the_image_offset(tmp_path, rng):
    mean = rng.uniform(0, 255, size=(3, 10, 12)).astype(np.float32)
    _write_blobproto(tmp_path / "mean.binaryproto", mean[None])
    param = caffe_pb2.TransformationParameter(crop_size=6, mean_file="mean.binaryproto",
                                              scale=2.0)
    prep = Preprocessing.from_transform_param(param, base_dir=tmp_path)
    assert prep.size == (10, 12) and prep.crop == (6, 6) and prep.mean.shape == (3, 10, 12)
    image = _image(rng, 10, 12)
    out = prep(image)
    bgr = image.astype(np.float32).transpose(2, 0, 1)[::-1]
    np.testing.assert_allclose(out, ((bgr - mean) * 2.0)[:, 2:8, 3:9], rtol=1e-6)
    np.testing.assert_array_equal(read_mean_file(tmp_path / "mean.binaryproto"), mean)


def test_mean_image_of_another_size_is_a_clear_error(rng):
    prep = Preprocessing(size=(8, 8), mean=np.zeros((3, 5, 5), np.float32))
    with pytest.raises(PreprocessError, match="mean image is 5x5"):
        prep(_image(rng))


def test_vgg_face_manifest_defaults():
    entry = get_entry("vgg_face")
    prep = Preprocessing.from_manifest(entry)
    assert prep.size == (224, 224) and prep.crop is None and prep.channel_order == "BGR"
    np.testing.assert_allclose(prep.mean, [93.5940, 104.7624, 129.1863], rtol=1e-6)
    graph = caffe2torch.load_graph(ROOT / "model_zoo" / "vgg_face" / "deploy.prototxt")
    found = default_preprocessing(graph)  # the zoo entry is recognised from the path
    assert found.source == "model zoo entry 'vgg_face'"
    out = found(HOPPER)
    assert out.shape == (3, 224, 224)
    assert -130 < out.min() < 0 < out.max() < 165  # 0..255 pixels minus the BGR means


def test_manifest_mean_order_is_converted_to_the_channel_order():
    prep = Preprocessing.from_manifest({"preprocessing": {
        "channel_order": "BGR", "mean": [1.0, 2.0, 3.0], "mean_order": "RGB", "crop": 4}})
    np.testing.assert_array_equal(prep.mean, [3.0, 2.0, 1.0])
    assert prep.crop == (4, 4)


def test_transform_param_of_a_train_val_data_layer(write_net):
    path = write_net("""
name: "tv"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { crop_size: 9 mean_value: 104 mean_value: 117 mean_value: 123 scale: 0.5 }
  data_param { source: "x" batch_size: 2 } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 2 kernel_size: 3 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "conv" bottom: "label" top: "loss" }
""")
    graph = caffe2torch.load_graph(path, {"data": (2, 3, 9, 9)})
    prep = default_preprocessing(graph)
    assert prep.source == "transform_param"
    assert (prep.size, prep.crop, prep.scale) == (9, (9, 9), 0.5)
    np.testing.assert_array_equal(prep.mean, [104, 117, 123])
    assert prep(np.full((12, 20, 3), 200, np.uint8)).shape == (3, 9, 9)


def test_net_without_recorded_preprocessing_gets_its_input_size(write_net):
    path = write_net('name: "n" input: "data" input_shape { dim: 1 dim: 3 dim: 13 dim: 17 }\n'
                     'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }')
    prep = default_preprocessing(caffe2torch.load_graph(path))
    assert prep.source == "defaults" and prep.size == (13, 17) and prep.mean is None


def test_real_photograph_and_display_image():
    prep = Preprocessing(size=64, crop=(56, 48))
    out = prep(HOPPER)
    shown = prep.display_image(HOPPER)
    assert out.shape == (3, 56, 48) and shown.shape == (56, 48, 3) and shown.dtype == np.uint8
    np.testing.assert_array_equal(out[::-1].transpose(1, 2, 0), shown.astype(np.float32))
    assert out.std() > 20  # a photograph, not a flat image


def test_parsing_and_bad_inputs(tmp_path):
    assert parse_size("256") == 256 and parse_size("224x200") == (224, 200)
    np.testing.assert_array_equal(parse_mean("104, 117,123"), [104, 117, 123])
    for bad in ("a", "0", "1x2x3"):
        with pytest.raises(PreprocessError):
            parse_size(bad)
    with pytest.raises(PreprocessError, match="does not exist"):
        parse_mean(str(tmp_path / "missing.binaryproto"))
    (tmp_path / "fake.jpg").write_text("not a picture")
    with pytest.raises(PreprocessError, match="not an image"):
        load_image(tmp_path / "fake.jpg")
    with pytest.raises(PreprocessError, match="2 values for 3"):
        Preprocessing(mean=[1.0, 2.0])
    with pytest.raises(PreprocessError, match="larger than the resized image"):
        Preprocessing(size=(8, 8), crop=(9, 9))(np.zeros((8, 8, 3), np.uint8))


def test_list_images_is_recursive_sorted_and_relative(tmp_path):
    for name in ("b.png", "a/c.JPG", "a/readme.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert list_images(tmp_path) == ["a/c.JPG", "b.png"]


def test_missing_mean_file_is_named_unless_the_mean_is_replaced():
    path = require_shared(CORPUS / "bvlc_reference_caffenet_train_val.prototxt")
    graph = caffe2torch.load_graph(path, {"data": (1, 3, 227, 227)})
    with pytest.raises(PreprocessError, match="imagenet_mean.binaryproto does not exist; pass"):
        default_preprocessing(graph)
    prep = default_preprocessing(graph, load_mean_file=False).replace(mean=[104, 117, 123])
    assert (prep.size, prep.crop, prep.source) == (227, (227, 227), "transform_param")
    assert prep(HOPPER).shape == (3, 227, 227)
