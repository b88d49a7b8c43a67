"""Figures of what a net learned and what it looks at: filters, activations, a heatmap.

The array functions (:func:`filter_grid`, :func:`activation_grid`, :func:`heatmap_overlay`)
return H x W x 3 uint8 RGB images; :func:`visualize` runs a net on an image and writes the three
figures as PNG with matplotlib (Agg, no display needed).
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from caffe2torch.build import CaffeNet
from caffe2torch.devices import as_input, as_numpy
from caffe2torch.errors import Caffe2TorchError
from caffe2torch.layers.registry import get_converter
from caffe2torch.preprocess import ImageInput, Preprocessing, default_preprocessing
from caffe2torch.research.graphing import require_matplotlib

DISPLAY_SIZE = 224  # small inputs are shown enlarged to at least this many pixels high


class VisualizeError(Caffe2TorchError):
    """A layer that does not exist or has no spatial output to show."""


def filter_grid(weights: np.ndarray, channel_order: str = "BGR", *, cell: int = 40,
                pad: int = 2) -> np.ndarray:
    """Filters (O, I, kh, kw) as a grid image, each normalised to [0, 1] on its own.

    Three input channels are shown in colour (BGR weights flipped to RGB); other counts as the
    mean over the input channels, in gray.
    """
    weights = np.asarray(weights, dtype=np.float32)
    if weights.ndim != 4:
        raise VisualizeError(f"filters of shape {weights.shape}: expected (O, I, kh, kw)")
    if weights.shape[1] == 3:
        tiles = weights[:, ::-1] if channel_order.upper() == "BGR" else weights
    else:
        tiles = np.repeat(weights.mean(axis=1, keepdims=True), 3, axis=1)
    low = tiles.min(axis=(1, 2, 3), keepdims=True)
    high = tiles.max(axis=(1, 2, 3), keepdims=True)
    tiles = (tiles - low) / np.maximum(high - low, 1e-12)
    factor = max(1, cell // max(weights.shape[2:]))
    tiles = tiles.repeat(factor, axis=2).repeat(factor, axis=3).transpose(0, 2, 3, 1)
    return _grid(tiles * 255.0, pad)


def activation_grid(activation: np.ndarray, *, max_channels: int = 64, cmap: str = "viridis",
                    pad: int = 2, min_cell: int = 48) -> np.ndarray:
    """The first ``max_channels`` channels of a (C, H, W) activation, each normalised, coloured."""
    activation = _spatial(activation, "activation")
    channels = activation[:max_channels]
    low = channels.min(axis=(1, 2), keepdims=True)
    high = channels.max(axis=(1, 2), keepdims=True)
    normalised = (channels - low) / np.maximum(high - low, 1e-12)
    factor = max(1, math.ceil(min_cell / max(channels.shape[1:])))
    normalised = normalised.repeat(factor, axis=1).repeat(factor, axis=2)
    return _grid(_colormap(normalised, cmap), pad)


def heatmap_overlay(image: np.ndarray, activation: np.ndarray, *, alpha: float = 0.5,
                    cmap: str = "jet") -> np.ndarray:
    """The channel mean of an activation, upsampled to the image, coloured, blended over it.

    ``image`` is H x W x 3 uint8 RGB (the input as the net saw it); ``activation`` (C, h, w) or
    (h, w).
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise VisualizeError(f"image of shape {image.shape}: expected H x W x 3")
    activation = np.asarray(activation, dtype=np.float32)
    heat = activation if activation.ndim == 2 else _spatial(activation, "activation").mean(axis=0)
    upsampled = torch.nn.functional.interpolate(
        torch.from_numpy(np.ascontiguousarray(heat))[None, None], size=image.shape[:2],
        mode="bilinear", align_corners=False)[0, 0].numpy()
    low, high = float(upsampled.min()), float(upsampled.max())
    upsampled = (upsampled - low) / max(high - low, 1e-12)
    coloured = _colormap(upsampled[None], cmap)[0].astype(np.float32)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * coloured
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


@dataclass
class Figures:
    """The files :func:`visualize` wrote (``None`` for a figure not made)."""

    filters: Path | None
    activations: Path | None
    heatmap: Path | None
    layer: str
    filter_layer: str | None


def visualize(net: CaffeNet, image: ImageInput, output_dir: str | os.PathLike[str], *,
              layer: str | None = None, filters: str | None = None,
              preprocessing: Preprocessing | None = None, max_channels: int = 64,
              alpha: float = 0.5) -> Figures:
    """Write ``filters_<layer>.png``, ``activations_<layer>.png`` and ``heatmap_<layer>.png``.

    ``layer`` (a layer or blob name; default the last layer with a spatial output) gives the
    activations and the heatmap; ``filters`` (default the first Convolution) the filter grid.
    """
    graph = net.caffe.graph
    prep = preprocessing or default_preprocessing(graph)
    array = prep(image)[None]
    layer = layer or _last_spatial_layer(net)
    activation = _activation(net, array, layer)[0]
    shown = _at_least(prep.display_image(image), DISPLAY_SIZE)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    filter_layer = filters or _first_convolution(net)
    filter_path = None
    if filter_layer is not None:
        weights = layer_weights(net, filter_layer)
        filter_path = out / f"filters_{_file_part(filter_layer)}.png"
        _save_figure(filter_grid(weights, prep.channel_order), filter_path,
                     f"{filter_layer}: {weights.shape[0]} filters "
                     f"{weights.shape[2]}x{weights.shape[3]}x{weights.shape[1]} (each scaled to "
                     "[0, 1])")
    activation_path = out / f"activations_{_file_part(layer)}.png"
    count = min(max_channels, activation.shape[0])
    _save_figure(activation_grid(activation, max_channels=max_channels), activation_path,
                 f"{layer}: {count} of {activation.shape[0]} channels "
                 f"{activation.shape[1]}x{activation.shape[2]} (each scaled to [0, 1])")
    heatmap_path = out / f"heatmap_{_file_part(layer)}.png"
    overlay = heatmap_overlay(shown, activation, alpha=alpha)
    _save_figure(np.concatenate([shown, np.full((shown.shape[0], 8, 3), 255, np.uint8), overlay],
                                axis=1), heatmap_path,
                 f"input as the net sees it | mean of {layer}'s {activation.shape[0]} channels")
    return Figures(filters=filter_path, activations=activation_path, heatmap=heatmap_path,
                   layer=layer, filter_layer=filter_layer)


def layer_weights(net: CaffeNet, layer: str) -> np.ndarray:
    """A layer's first Caffe parameter blob (a convolution's (O, I, kh, kw) filters)."""
    graph = net.caffe.graph
    try:
        node = graph.layer(layer)
    except KeyError:
        raise VisualizeError(f"no layer named '{layer}' in net '{graph.name}'") from None
    inputs = [graph.blobs[b].shape for b in node.bottoms]
    blobs = get_converter(node.type).dump_blobs(net.get_submodule(node.module_name), node, inputs)
    if not blobs or blobs[0].ndim != 4:
        raise VisualizeError(f"layer '{layer}' ({node.type}) has no 4-D filters to show")
    return blobs[0]


def _activation(net: CaffeNet, array: np.ndarray, name: str) -> np.ndarray:
    with torch.no_grad():
        x = as_input(net, array)
        if name in net.caffe.layer_nodes:
            value = net.layer_outputs(x, layers=[name])[name][0]
        elif name in net.caffe.blob_nodes:
            value = net(x, outputs=[name])[name]
        else:
            spatial = [n.name for n in net.caffe.graph.layers if _is_spatial(net, n)]
            raise VisualizeError(f"no layer or blob named '{name}' in net "
                                 f"'{net.caffe.graph.name}'; its last layers with spatial "
                                 f"outputs: {spatial[-5:]}")
    value = as_numpy(value)
    if value.ndim != 4:
        raise VisualizeError(f"'{name}' gives a {'x'.join(map(str, value.shape))} output; "
                             "activations and heatmaps need a spatial (N, C, H, W) one such as "
                             "a convolution's or a pooling's")
    return value


def _last_spatial_layer(net: CaffeNet) -> str:
    graph = net.caffe.graph
    for node in reversed(graph.layers):
        if _is_spatial(net, node):
            return node.name
    raise VisualizeError(f"net '{graph.name}' has no layer with a spatial output")


def _is_spatial(net: CaffeNet, node) -> bool:
    if node.role != "compute" or not node.tops or node.name not in net.caffe.layer_nodes:
        return False
    shape = net.caffe.graph.blobs[node.tops[0]].shape
    return shape is not None and len(shape) == 4 and shape[2] * shape[3] > 1


def _first_convolution(net: CaffeNet) -> str | None:
    for node in net.caffe.graph.layers:
        if node.type == "Convolution":
            return node.name
    return None


def _spatial(activation: np.ndarray, what: str) -> np.ndarray:
    activation = np.asarray(activation, dtype=np.float32)
    if activation.ndim == 4 and activation.shape[0] == 1:
        activation = activation[0]
    if activation.ndim != 3:
        raise VisualizeError(f"{what} of shape {activation.shape}: expected (C, H, W)")
    return activation


def _colormap(values: np.ndarray, cmap: str) -> np.ndarray:
    """(N, H, W) values in [0, 1] -> (N, H, W, 3) floats 0..255."""
    require_matplotlib("colouring activations")
    from matplotlib import colormaps
    return colormaps[cmap](values)[..., :3] * 255.0


def _grid(tiles: np.ndarray, pad: int) -> np.ndarray:
    """(N, h, w, 3) tiles of 0..255 floats -> one near-square grid image, uint8."""
    count, height, width = tiles.shape[:3]
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = np.full((rows * (height + pad) + pad, columns * (width + pad) + pad, 3), 255,
                   dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        top, left = pad + r * (height + pad), pad + c * (width + pad)
        grid[top:top + height, left:left + width] = np.clip(tile + 0.5, 0, 255).astype(np.uint8)
    return grid


def _save_figure(image: np.ndarray, path: Path, title: str) -> None:
    from matplotlib.figure import Figure
    dpi = 100
    height, width = image.shape[:2]
    figure_width = max(width, 400, int(len(title) * 6.5) + 20)  # ~6.5 px per 9 pt character
    figure = Figure(figsize=(figure_width / dpi, (height + 40) / dpi), dpi=dpi)
    axes = figure.add_axes((0, 0, 1, height / (height + 40)))
    axes.imshow(image, interpolation="nearest")
    axes.axis("off")
    figure.text(0.5, 1 - 20 / (height + 40), title, ha="center", va="center", fontsize=9)
    figure.savefig(path, dpi=dpi)


def _at_least(image: np.ndarray, size: int) -> np.ndarray:
    factor = math.ceil(size / min(image.shape[:2]))
    if factor <= 1:
        return image
    return image.repeat(factor, axis=0).repeat(factor, axis=1)


def _file_part(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
