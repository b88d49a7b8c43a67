"""Caffe-style input preprocessing: an image file -> the (C, H, W) float32 array a net expects.

The steps, in Caffe's order (``caffe.io.Transformer`` in deploy scripts, ``DataTransformer`` for
Data layers)::

    load (PIL, RGB or gray) -> resize -> center crop -> HWC to CHW -> RGB to BGR
      -> x raw_scale / 255 -> subtract the mean (per channel, or a mean image) -> x scale

Defaults come from a model-zoo manifest's ``preprocessing`` block (:meth:`Preprocessing.from_manifest`)
or from a Data layer's ``transform_param`` (:meth:`Preprocessing.from_transform_param`);
:func:`default_preprocessing` picks one for a net. A mean image is cropped at the same offset as
the image, as Caffe's DataTransformer does, so it must have the size of the resized image (or
of the crop).
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

import numpy as np

from caffe2torch.errors import Caffe2TorchError
from caffe2torch.zoo import ZooEntry

if TYPE_CHECKING:
    from PIL import Image

    from caffe2torch.ir.graph import NetGraph
    from caffe2torch.proto import caffe_pb2

log = logging.getLogger("caffe2torch")

ImageInput = Union[str, "os.PathLike[str]", "Image.Image", np.ndarray]
Size = int | tuple[int, int]
ChannelOrder = Literal["BGR", "RGB"]
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".pbm", ".tif",
                              ".tiff", ".webp", ".gif"})


class PreprocessError(Caffe2TorchError):
    """An image or a preprocessing setting that cannot be used (names the file or the value)."""


@dataclass
class Preprocessing:
    """How to turn an image into a net input, the Caffe way.

    ``size``: ``(H, W)`` resizes exactly (Caffe's ``resize_height/width``, aspect not kept); an int
    resizes the shorter side to it (aspect kept); ``None`` keeps the image size.
    ``crop``: center crop ``(H, W)`` after the resize, or ``None``.
    ``channel_order``: the order the net's input channels are in (Caffe nets: BGR).
    ``raw_scale``: the value a white pixel gets (255: pixel values as they are; 1: [0, 1]).
    ``mean``: subtracted after ``raw_scale``, in ``channel_order``: one value per channel
    (shape (C,)) or a mean image (C, H, W) of the resized or of the cropped size.
    ``scale``: multiplies the result (Caffe's ``transform_param.scale`` / ``input_scale``).
    ``channels``: 3 (color) or 1 (gray).
    """

    size: Size | None = None
    crop: tuple[int, int] | None = None
    channel_order: ChannelOrder = "BGR"
    raw_scale: float = 255.0
    mean: np.ndarray | None = None
    scale: float = 1.0
    channels: int = 3
    source: str = field(default="defaults", compare=False)

    def __post_init__(self) -> None:
        if self.channel_order not in ("BGR", "RGB"):
            raise PreprocessError(f"channel_order {self.channel_order!r}: expected 'BGR' or 'RGB'")
        if self.channels not in (1, 3):
            raise PreprocessError(f"channels {self.channels}: expected 1 (gray) or 3 (color)")
        if isinstance(self.size, Sequence):
            self.size = _pair(self.size, "size")
        if self.crop is not None:
            self.crop = _pair(self.crop, "crop")
        if self.mean is not None:
            self.mean = _mean_array(self.mean, self.channels)

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any] | ZooEntry,
                      base_dir: str | os.PathLike[str] | None = None,
                      channels: int = 3) -> Preprocessing:
        """From a model-zoo manifest (or its ``preprocessing`` block, or a ``ZooEntry``).

        Keys: ``resize`` ([H, W] or an int for the shorter side), ``crop`` (int or [H, W]),
        ``channel_order`` ("BGR"/"RGB"), ``raw_scale``, ``mean`` (per channel) with
        ``mean_order``, or ``mean_file`` (a binaryproto, relative to ``base_dir``), ``scale``.
        """
        source = "manifest"
        if isinstance(manifest, ZooEntry):
            base_dir = base_dir or manifest.directory
            source = f"model zoo entry '{manifest.id}'"
            manifest = manifest.manifest
        block = dict(manifest.get("preprocessing", manifest))
        order = str(block.get("channel_order", "BGR")).upper()
        mean: np.ndarray | None = None
        if block.get("mean_file"):
            mean = read_mean_file(_resolve(block["mean_file"], base_dir))
        elif block.get("mean") is not None:
            mean = np.asarray(block["mean"], dtype=np.float32)
            if str(block.get("mean_order", order)).upper() != order and mean.ndim == 1:
                mean = mean[::-1].copy()
        crop = block.get("crop")
        return cls(size=_size(block.get("resize")), crop=None if crop is None else _pair(crop),
                   channel_order=order, raw_scale=float(block.get("raw_scale", 255.0)),
                   mean=mean, scale=float(block.get("scale", 1.0)), channels=channels,
                   source=source)

    @classmethod
    def from_transform_param(cls, param: caffe_pb2.TransformationParameter,
                             base_dir: str | os.PathLike[str] | None = None,
                             input_shape: Sequence[int] | None = None, *,
                             load_mean_file: bool = True) -> Preprocessing:
        """From a Data layer's ``transform_param`` (crop_size, mean_value, mean_file, scale).

        Caffe's Data layers read BGR pixels in 0..255. The resize (which Caffe did when the
        database was made) is the mean image's size when there is a mean file, else the shorter
        side to the crop, else the input's H x W. ``load_mean_file=False`` leaves a mean file
        out (when the caller replaces the mean anyway).
        """
        channels = 1 if param.force_gray else 3
        if input_shape is not None and len(input_shape) == 4 and input_shape[1] in (1, 3):
            channels = 1 if param.force_gray else int(input_shape[1])
        crop_h = param.crop_h or param.crop_size
        crop_w = param.crop_w or param.crop_size
        crop = (int(crop_h), int(crop_w)) if crop_h and crop_w else None
        mean: np.ndarray | None = None
        if param.mean_file and load_mean_file:
            mean = read_mean_file(_resolve(param.mean_file, base_dir))
        elif len(param.mean_value):
            mean = np.asarray(list(param.mean_value), dtype=np.float32)
            if mean.size == 1:
                mean = np.repeat(mean, channels)
        size: Size | None
        if mean is not None and mean.ndim == 3:
            size = (int(mean.shape[1]), int(mean.shape[2]))
        elif crop is not None:
            size = max(crop)
        else:
            size = _input_hw(input_shape)
        return cls(size=size, crop=crop, mean=mean, scale=float(param.scale), channels=channels,
                   source="transform_param")

    def replace(self, **changes: Any) -> Preprocessing:
        """A copy with some fields changed (``None`` values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    # ------------------------------------------------------------------ applying

    def __call__(self, image: ImageInput) -> np.ndarray:
        """The net input for one image: (C, H, W) float32."""
        pixels = np.asarray(self._geometry(image), dtype=np.float32)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        resized_hw = pixels.shape[:2]
        top, left, height, width = self._crop_box(resized_hw)
        array = pixels[top:top + height, left:left + width].transpose(2, 0, 1)
        if self.channels == 3 and self.channel_order == "BGR":
            array = array[::-1]
        if self.raw_scale != 255.0:
            array = array * np.float32(self.raw_scale / 255.0)
        if self.mean is not None:
            array = array - self._mean_for(resized_hw, (top, left, height, width))
        if self.scale != 1.0:
            array = array * np.float32(self.scale)
        return np.ascontiguousarray(array, dtype=np.float32)

    def batch(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Several images as one (N, C, H, W) float32 batch (they must end up the same size)."""
        arrays = [self(image) for image in images]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise PreprocessError(f"images of different sizes after preprocessing: "
                                  f"{sorted(shapes)}; give an exact size (H, W) or a crop")
        return np.stack(arrays)

    def display_image(self, image: ImageInput) -> np.ndarray:
        """The image as the net sees it (resized and cropped), as H x W x 3 uint8 RGB for display."""
        pixels = np.asarray(self._geometry(image, for_display=True))
        top, left, height, width = self._crop_box(pixels.shape[:2])
        return np.ascontiguousarray(pixels[top:top + height, left:left + width])

    def output_hw(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """The (H, W) an image of ``image_hw`` gets."""
        if self.crop is not None:
            return self.crop
        return _resized_hw(image_hw, self.size)

    def view_box(self, image_hw: tuple[int, int]) -> tuple[float, float, float, float]:
        """The part of an ``image_hw`` image the net input shows: ``(x0, y0, x1, y1)`` in the
        image's pixels (the whole image unless there is a crop). Maps coordinates given relative
        to the net input (as SSD's DetectionOutput gives them) back onto the image."""
        height, width = image_hw
        resized_h, resized_w = _resized_hw(image_hw, self.size)
        top, left, crop_h, crop_w = self._crop_box((resized_h, resized_w))
        sx, sy = width / resized_w, height / resized_h
        return left * sx, top * sy, (left + crop_w) * sx, (top + crop_h) * sy

    def describe(self) -> str:
        """One line for logs: every setting."""
        if self.mean is None:
            mean = "none"
        elif self.mean.ndim == 1:
            mean = "(" + ", ".join(f"{v:g}" for v in self.mean) + ")"
        else:
            mean = "image " + "x".join(str(d) for d in self.mean.shape)
        size = "-" if self.size is None else (
            f"shorter side {self.size}" if isinstance(self.size, int) else
            f"{self.size[0]}x{self.size[1]}")
        crop = "-" if self.crop is None else f"{self.crop[0]}x{self.crop[1]}"
        order = "gray" if self.channels == 1 else self.channel_order
        return (f"resize {size}, center crop {crop}, {order}, raw_scale {self.raw_scale:g}, "
                f"mean {mean}, scale {self.scale:g} (from {self.source})")

    def as_options(self) -> str:
        """The command-line options that give these settings (a mean image: ``--mean FILE``)."""
        options = []
        if isinstance(self.size, int):
            options.append(f"--size {self.size}")
        elif self.size is not None:
            options.append(f"--size {self.size[0]}x{self.size[1]}")
        if self.crop is not None:
            options.append(f"--crop {self.crop[0]}x{self.crop[1]}")
        if self.channel_order == "RGB":
            options.append("--rgb")
        if self.raw_scale != 255.0:
            options.append(f"--raw-scale {self.raw_scale:g}")
        if self.mean is not None:
            options.append("--mean " + (",".join(f"{v:.7g}" for v in self.mean)
                                        if self.mean.ndim == 1 else "MEAN_FILE"))
        if self.scale != 1.0:
            options.append(f"--scale {self.scale:g}")
        return " ".join(options)

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-able values (a mean image by its sha256)."""
        mean: Any = None
        if self.mean is not None:
            mean = ([float(v) for v in self.mean] if self.mean.ndim == 1 else
                    "sha256:" + hashlib.sha256(self.mean.tobytes()).hexdigest())
        return {"size": self.size if isinstance(self.size, int) or self.size is None
                else list(self.size), "crop": None if self.crop is None else list(self.crop),
                "channel_order": self.channel_order, "raw_scale": self.raw_scale, "mean": mean,
                "scale": self.scale, "channels": self.channels}

    # ------------------------------------------------------------------ helpers

    def _geometry(self, image: ImageInput, for_display: bool = False) -> Image.Image:
        picture = load_image(image, gray=self.channels == 1 and not for_display)
        if for_display and picture.mode != "RGB":
            picture = picture.convert("RGB")
        height, width = _resized_hw((picture.height, picture.width), self.size)
        if (height, width) != (picture.height, picture.width):
            from PIL import Image
            picture = picture.resize((width, height), Image.Resampling.BILINEAR)
        return picture

    def _crop_box(self, hw: tuple[int, int]) -> tuple[int, int, int, int]:
        height, width = hw
        if self.crop is None:
            return 0, 0, height, width
        crop_h, crop_w = self.crop
        if crop_h > height or crop_w > width:
            raise PreprocessError(f"crop {crop_h}x{crop_w} is larger than the resized image "
                                  f"{height}x{width}; give a larger size")
        return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w

    def _mean_for(self, resized_hw: tuple[int, ...], box: tuple[int, int, int, int]) -> np.ndarray:
        mean = self.mean
        assert mean is not None
        if mean.ndim == 1:
            return mean[:, None, None]
        top, left, height, width = box
        if tuple(mean.shape[1:]) == tuple(resized_hw):
            return mean[:, top:top + height, left:left + width]
        if tuple(mean.shape[1:]) == (height, width):
            return mean
        raise PreprocessError(
            f"the mean image is {mean.shape[1]}x{mean.shape[2]}, but the image is "
            f"{resized_hw[0]}x{resized_hw[1]} after resizing and {height}x{width} after cropping; "
            "resize to the mean's size, or use per-channel means (e.g. --mean 104,117,123)")


# ---------------------------------------------------------------------- loading and parsing


def load_image(image: ImageInput, gray: bool = False) -> Image.Image:
    """An image file, PIL image or H x W (x 3) uint8 RGB array as a PIL image (RGB or L)."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as err:
        raise PreprocessError("reading images needs Pillow: pip install pillow") from err
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise PreprocessError(f"an image array must be uint8 H x W (x 3) RGB; got "
                                  f"{image.dtype} {image.shape}")
        picture = Image.fromarray(image)
    elif isinstance(image, Image.Image):
        picture = image
    else:
        try:
            with Image.open(os.fspath(image)) as opened:
                picture = opened.convert("RGB")
        except UnidentifiedImageError:
            raise PreprocessError(f"{os.fspath(image)}: not an image Pillow can read") from None
        except (OSError, SyntaxError, ValueError) as err:
            raise PreprocessError(f"{os.fspath(image)}: cannot read the image ({err})") from None
    wanted = "L" if gray else "RGB"
    return picture if picture.mode == wanted else picture.convert(wanted)


def read_mean_file(path: str | os.PathLike[str]) -> np.ndarray:
    """A mean image from a ``.binaryproto`` (Caffe's compute_image_mean) or ``.npy``: (C, H, W)."""
    path = Path(path)
    if not path.is_file():
        raise PreprocessError(f"mean file {path} does not exist; pass per-channel means instead "
                              "(e.g. --mean 104,117,123) or the file's location")
    if path.suffix == ".npy":
        mean = np.load(path, allow_pickle=False)
    else:
        from caffe2torch.io.caffemodel import read_blobproto
        mean = read_blobproto(path)
    mean = np.asarray(mean, dtype=np.float32)
    while mean.ndim > 3 and mean.shape[0] == 1:
        mean = mean[0]
    if mean.ndim not in (1, 3):
        raise PreprocessError(f"mean file {path}: shape {mean.shape}; expected (C,), (C, H, W) "
                              "or (1, C, H, W)")
    return mean


def parse_mean(text: str) -> np.ndarray:
    """``"104,117,123"`` (per channel, in the net's channel order) or a mean file path."""
    if os.path.splitext(text)[1] in (".binaryproto", ".npy", ".proto") or os.path.isfile(text):
        return read_mean_file(text)
    try:
        return np.asarray([float(v) for v in text.replace(" ", "").split(",") if v],
                          dtype=np.float32)
    except ValueError:
        raise PreprocessError(f"--mean {text!r}: expected values like 104,117,123 or a "
                              ".binaryproto / .npy file") from None


def parse_size(text: str) -> Size:
    """``"256"`` (shorter side) or ``"224x224"`` / ``"224,224"`` (H x W)."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise PreprocessError(f"size {text!r}: expected N (shorter side) or HxW") from None
    if len(values) == 1:
        return _positive(values[0], text)
    if len(values) == 2:
        return _pair(values, text)
    raise PreprocessError(f"size {text!r}: expected N (shorter side) or HxW")


def list_images(directory: str | os.PathLike[str]) -> list[str]:
    """Image files under ``directory`` (recursively) as sorted relative POSIX paths."""
    root = Path(directory)
    if not root.is_dir():
        raise PreprocessError(f"{root} is not a directory")
    found = [p.relative_to(root).as_posix() for p in root.rglob("*")
             if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
    return sorted(found)


# ---------------------------------------------------------------------- defaults for a net


def default_preprocessing(graph: NetGraph, entry: ZooEntry | None = None, *,
                          load_mean_file: bool = True) -> Preprocessing:
    """The preprocessing a net was trained with, as far as its files say.

    In order: the model zoo entry (given, or the one whose prototxt this is); a Data layer's
    ``transform_param`` in the prototxt (the kept phase's first); else BGR pixels 0..255 resized
    to the input size, no mean. ``load_mean_file=False`` skips reading a mean file (for a
    caller that replaces the mean).
    """
    input_shape = _first_input_shape(graph)
    channels = 1 if input_shape is not None and len(input_shape) == 4 and input_shape[1] == 1 \
        else 3
    entry = entry or _zoo_entry_for(graph.definition.source)
    if entry is not None and entry.preprocessing:
        found = Preprocessing.from_manifest(entry, channels=channels)
    else:
        param = _transform_param(graph)
        base_dir = Path(graph.definition.source).parent
        if param is not None:
            found = Preprocessing.from_transform_param(param, base_dir, input_shape,
                                                       load_mean_file=load_mean_file)
        else:
            log.info("%s: no preprocessing recorded (no zoo manifest, no Data layer); using "
                     "BGR 0..255 without a mean subtraction", graph.definition.source)
            found = Preprocessing(size=_input_hw(input_shape), channels=channels,
                                  source="defaults")
    if found.size is None and found.crop is None:
        found.size = _input_hw(input_shape)
    return found


def _first_input_shape(graph: NetGraph) -> tuple[int, ...] | None:
    for blob_id in graph.inputs:
        shape = graph.blobs[blob_id].shape
        if shape is not None:
            return shape
    return None


def _transform_param(graph: NetGraph) -> caffe_pb2.TransformationParameter | None:
    kept = [node.param for node in graph.layers if node.role == "input"]
    every = list(graph.definition.net.layer)
    for param in kept + every:
        if param.HasField("transform_param"):
            tp = param.transform_param
            if tp.crop_size or tp.mean_file or len(tp.mean_value) or tp.HasField("scale"):
                return tp
    return None


def _zoo_entry_for(source: str) -> ZooEntry | None:
    from caffe2torch.zoo import entry_for_prototxt
    return entry_for_prototxt(source)


def _input_hw(shape: Sequence[int] | None) -> tuple[int, int] | None:
    if shape is not None and len(shape) == 4:
        return int(shape[2]), int(shape[3])
    return None


def _resized_hw(hw: tuple[int, int], size: Size | None) -> tuple[int, int]:
    height, width = hw
    if size is None:
        return height, width
    if isinstance(size, int):
        if height <= width:
            return size, max(1, round(width * size / height))
        return max(1, round(height * size / width)), size
    return size


def _resolve(path: str | os.PathLike[str], base_dir: str | os.PathLike[str] | None) -> Path:
    candidate = Path(path)
    if candidate.is_absolute() or base_dir is None:
        return candidate
    beside = Path(base_dir) / candidate
    return beside if beside.exists() or not candidate.exists() else candidate


def _size(value: Any) -> Size | None:
    if value is None:
        return None
    if isinstance(value, int):
        return _positive(value, "resize")
    return _pair(value, "resize")


def _pair(value: Any, what: str = "crop") -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        return _positive(int(value), what), _positive(int(value), what)
    values = tuple(int(v) for v in value)
    if len(values) != 2:
        raise PreprocessError(f"{what} {value!r}: expected (H, W)")
    return _positive(values[0], what), _positive(values[1], what)


def _positive(value: int, what: str) -> int:
    if value <= 0:
        raise PreprocessError(f"{what} {value!r}: sizes must be positive")
    return value


def _mean_array(mean: Any, channels: int) -> np.ndarray:
    array = np.asarray(mean, dtype=np.float32)
    if array.ndim == 0:
        array = np.repeat(array[None], channels)
    if array.ndim == 1 and array.size == 1 and channels > 1:
        array = np.repeat(array, channels)
    if array.ndim == 1 and array.size != channels:
        raise PreprocessError(f"mean has {array.size} values for {channels} channel(s)")
    if array.ndim == 3 and array.shape[0] != channels:
        raise PreprocessError(f"mean image has {array.shape[0]} channel(s); the net takes "
                              f"{channels}")
    if array.ndim not in (1, 3):
        raise PreprocessError(f"mean of shape {array.shape}: expected (C,) or (C, H, W)")
    return array
