"""Figures of what a net learned and what it looks at: filters, activations, a heatmap.

The array functions (:func:`filter_grid`, :func:`activation_grid`, :func:`heatmap_overlay`)
return H x W x 3 uint8 RGB images; :func:`visualize` runs a net on an image and writes the three
figures as PNG with matplotlib (Agg, no display needed).
"""
from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Iterator, Sequence
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
    gradcam: Path | None = None
    class_index: int | None = None  # the class the Grad-CAM map is for
    class_label: str | None = None


@dataclass
class ClassMap:
    """A Grad-CAM map: where in the image the evidence for one class is (h x w, >= 0)."""

    cam: np.ndarray
    class_index: int
    probability: float
    score_blob: str


def visualize(net: CaffeNet, image: ImageInput, output_dir: str | os.PathLike[str], *,
              layer: str | None = None, filters: str | None = None,
              preprocessing: Preprocessing | None = None, max_channels: int = 64,
              alpha: float = 0.5, class_index: int | str | None = None,
              labels: Sequence[str] | None = None, dpi: int = 100) -> Figures:
    """Write ``filters_<layer>.png``, ``activations_<layer>.png`` and ``heatmap_<layer>.png``
    (and with ``class_index``, an int or ``"top"``, ``gradcam_<layer>_<class>.png``).

    ``layer`` (a layer or blob name; default the last layer with a spatial output) gives the
    activations, the heatmap and the Grad-CAM map; ``filters`` (default the first Convolution)
    the filter grid; ``labels`` names the classes in the Grad-CAM title; ``dpi`` scales every
    figure (100: one image pixel per figure pixel). Everything is computed before the folder is
    made, and a failure while writing removes what was written (and the folder, if it was new).
    """
    out = check_output_dir(output_dir)
    _check_dpi(dpi)
    prep = preprocessing or default_preprocessing(net.caffe.graph)
    array = prep(image)[None]
    layer = layer or _last_spatial_layer(net)
    activation = _activation(net, array, layer)[0]
    shown = _at_least(prep.display_image(image), DISPLAY_SIZE)
    pages: list[tuple[Path, np.ndarray, str, bool]] = []
    filter_layer = filters or _first_convolution(net)
    filter_path = None
    if filter_layer is not None:
        weights = layer_weights(net, filter_layer)
        filter_path = out / f"filters_{_file_part(filter_layer)}.png"
        title = (f"{filter_layer}: {weights.shape[0]} filters {weights.shape[2]}x"
                 f"{weights.shape[3]}x{weights.shape[1]} (each scaled to [0, 1])")
        pages.append((filter_path, filter_grid(weights, prep.channel_order), title, False))
    activation_path = out / f"activations_{_file_part(layer)}.png"
    count = min(max_channels, activation.shape[0])
    title = (f"{layer}: {count} of {activation.shape[0]} channels "
             f"{activation.shape[1]}x{activation.shape[2]} (each scaled to [0, 1])")
    pages.append((activation_path, activation_grid(activation, max_channels=max_channels),
                  title, False))
    heatmap_path = out / f"heatmap_{_file_part(layer)}.png"
    overlay = heatmap_overlay(shown, activation, alpha=alpha)
    gap = np.full((shown.shape[0], 8, 3), 255, np.uint8)
    mean_title = f"mean of {layer}'s {activation.shape[0]} channels"
    pages.append((heatmap_path, np.concatenate([shown, gap, overlay], axis=1),
                  f"input as the net sees it | {mean_title}", False))
    figures = Figures(filters=filter_path, activations=activation_path, heatmap=heatmap_path,
                      layer=layer, filter_layer=filter_layer)
    if class_index is not None:
        found = grad_cam(net, array, layer, class_index)
        figures.class_index = found.class_index
        if labels is not None and found.class_index < len(labels):
            figures.class_label = labels[found.class_index]
        named = f" '{figures.class_label}'" if figures.class_label else ""
        figures.gradcam = out / f"gradcam_{_file_part(layer)}_{found.class_index}.png"
        cam = heatmap_overlay(shown, found.cam, alpha=alpha)
        title = (f"input | {mean_title} | Grad-CAM at {layer} of class {found.class_index}"
                 f"{named} (p={found.probability:.3f})")
        pages.append((figures.gradcam, np.concatenate([shown, gap, overlay, gap, cam], axis=1),
                      title, True))
    with _writing_into(out) as written:
        for path, picture, title, colorbar in pages:
            _save_figure(picture, path, title, dpi=dpi, colorbar=colorbar)
            written.append(path)
    return figures


def grad_cam(net: CaffeNet, array: np.ndarray, layer: str,
             class_index: int | str = "top") -> ClassMap:
    """Grad-CAM (Selvaraju et al. 2017) of one class at ``layer`` for a (1, C, H, W) input.

    The class score is the net's output before its Softmax (the Softmax layer's bottom) or the
    output itself; ``class_index`` is a class or ``"top"`` (the most probable one). The map is
    ReLU(sum over channels k of a_k * A_k), A the layer's activations and a_k the spatial mean
    of d score / d A_k; (h, w) at the layer's resolution.
    """
    from caffe2torch.research.classification import class_count, output_blob
    hint = "; Grad-CAM needs a net with one output of class scores (N x K)"
    output = output_blob(net, hint)
    classes = class_count(net, output, hint)
    score_blob = _class_scores(net, output)
    if class_index != "top" and not (isinstance(class_index, int) and 0 <= class_index < classes):
        raise VisualizeError(f"--class {class_index}: expected 'top' or a class index 0.."
                             f"{classes - 1} ('{output}' has {classes} classes)")
    node = _spatial_node(net, layer)
    wanted = {"activation": node, "scores": net.caffe.blob_nodes[score_blob]}
    x = as_input(net, array).requires_grad_(True)
    values = net.blob_module(wanted)(x)
    activation, scores = values["activation"], values["scores"].reshape(1, -1).float()
    probabilities = torch.softmax(scores.detach(), dim=1)  # the Softmax output, or from scores
    index = int(probabilities[0].argmax()) if class_index == "top" else int(class_index)
    gradient, = torch.autograd.grad(scores[0, index], activation)
    weights = gradient.float().mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * activation.float()).sum(dim=1))[0]
    return ClassMap(cam=as_numpy(cam), class_index=index,
                    probability=float(probabilities[0, index]), score_blob=score_blob)


def check_output_dir(path: str | os.PathLike[str]) -> Path:
    """A folder for the figures: existing, or one that can be made (checked before any work)."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise VisualizeError(f"{out}: is a file; expected a folder for the figures (-o DIR)")
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise VisualizeError(f"{out}: cannot be made: '{parent}' is a file, not a folder")
    return out


def _check_dpi(dpi: int) -> None:
    if not 10 <= dpi <= 1200:
        raise VisualizeError(f"--dpi {dpi}: expected 10..1200 (100: one image pixel per figure "
                             "pixel)")


@contextlib.contextmanager
def _writing_into(out: Path) -> Iterator[list[Path]]:
    """Make ``out``; on an error remove the files written into it (and it, if it was new)."""
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise VisualizeError(f"{out}: cannot make the folder ({err.strerror})") from None
    written: list[Path] = []
    try:
        yield written
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise


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


def _class_scores(net: CaffeNet, output: str) -> str:
    """The blob with the class scores Grad-CAM differentiates: the bottom of the Softmax whose
    top is the output, else the output itself."""
    graph = net.caffe.graph
    for node in graph.layers:
        if node.type == "Softmax" and any(graph.blobs[t].name == output for t in node.tops):
            return graph.blobs[node.bottoms[0]].name
    return output


def _spatial_node(net: CaffeNet, name: str) -> str:
    """The fx node of a layer's (or blob's) spatial output."""
    if name in net.caffe.layer_nodes:
        return net.caffe.layer_nodes[name][0]
    if name in net.caffe.blob_nodes:
        return net.caffe.blob_nodes[name]
    raise VisualizeError(f"no layer or blob named '{name}' in net '{net.caffe.graph.name}'")


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


def _save_figure(image: np.ndarray, path: Path, title: str, *, dpi: int = 100,
                 colorbar: bool = False) -> None:
    """The image at one pixel per figure pixel at 100 dpi (``dpi`` scales it), titled, with a
    jet colour bar on the right when ``colorbar``."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    height, width = image.shape[:2]
    bar = 90 if colorbar else 0
    figure_width = max(width + bar, 400, int(len(title) * 6.5) + 20)  # ~6.5 px per 9 pt char
    total_height = height + 40
    figure = Figure(figsize=(figure_width / 100, total_height / 100), dpi=dpi)
    axes = figure.add_axes((0, 0, (figure_width - bar) / figure_width, height / total_height))
    axes.imshow(image, interpolation="nearest")
    axes.axis("off")
    figure.text(0.5, 1 - 20 / total_height, title, ha="center", va="center", fontsize=9)
    if colorbar:
        cax = figure.add_axes(((figure_width - bar + 14) / figure_width, 0.1 * height /
                               total_height, 14 / figure_width, 0.8 * height / total_height))
        scale = figure.colorbar(ScalarMappable(Normalize(0, 1), colormaps["jet"]), cax=cax)
        scale.set_label("low to high (each map scaled to [0, 1])", fontsize=8)
        scale.ax.tick_params(labelsize=7)
    figure.savefig(path, dpi=dpi)


def _at_least(image: np.ndarray, size: int) -> np.ndarray:
    factor = math.ceil(size / min(image.shape[:2]))
    if factor <= 1:
        return image
    return image.repeat(factor, axis=0).repeat(factor, axis=1)


def _file_part(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
