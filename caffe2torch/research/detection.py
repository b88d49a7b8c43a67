"""Object detection with SSD-style nets: run a net on an image, read its DetectionOutput rows,
map the boxes onto the photograph, print or draw them.

The SSD fork's ``DetectionOutput`` layer (weiliu89/caffe, ``detection_output_layer.cpp``) writes
one blob of shape ``(1, 1, N, 7)``; each row is ``[image_id, label, score, xmin, ymin, xmax,
ymax]`` with the corners relative to the net input (0..1). When an image has no detection it
writes a single row ``[image_id, -1, -1, -1, -1, -1, -1]``: rows with a negative label are that
placeholder and never a detection. The background class (``background_label_id``, 0 in the
usual nets) is never reported, but it keeps its index, so label names are indexed by label id
with the background's name first::

    from caffe2torch import build
    from caffe2torch.research.detection import detect, draw_detections, read_labels
    net = build("model_zoo/res10_ssd_face/deploy.prototxt",
                "res10_300x300_ssd_iter_140000.caffemodel")
    found = detect(net, "people.jpg", threshold=0.5, labels=["background", "face"])
    # (the preprocessing defaults to the net's own: here the zoo manifest's)
    for d in found.detections:
        print(d.name, d.score, d.box)          # box: x1, y1, x2, y2 in the image's pixels
    draw_detections("people.jpg", found.detections).save("boxes.png")
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from caffe2torch.devices import as_input, as_numpy
from caffe2torch.errors import Caffe2TorchError
from caffe2torch.preprocess import ImageInput, Preprocessing, load_image
from caffe2torch.research.labels import name_lines, read_text

if TYPE_CHECKING:
    from PIL import Image

    from caffe2torch.build import CaffeNet
    from caffe2torch.ir.graph import LayerNode, NetGraph

DETECTION_TYPE = "DetectionOutput"
ROW_FIELDS = ("image_id", "label", "score", "xmin", "ymin", "xmax", "ymax")
# Distinct colours for the boxes, indexed by label id (cycled).
PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
           (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195),
           (128, 128, 0), (255, 215, 180), (0, 0, 128), (255, 225, 25), (128, 128, 128))


class DetectionError(Caffe2TorchError):
    """A net, blob, labels file or setting that does not fit object detection (names it)."""


@dataclass(frozen=True)
class Detection:
    """One detected object: label id, its name (None without labels), score, and the box
    ``(x1, y1, x2, y2)`` in the original image's pixels (clipped to the image)."""

    label: int
    score: float
    box: tuple[float, float, float, float]
    name: str | None = None

    @property
    def title(self) -> str:
        """The label's name, else its id."""
        return self.name if self.name is not None else str(self.label)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "name": self.name, "score": round(self.score, 6),
                "box": [round(v, 2) for v in self.box]}


@dataclass
class DetectionResult:
    """What :func:`detect` found in one image."""

    image_size: tuple[int, int]  # (width, height) of the original image
    blob: str
    threshold: float
    rows: int  # rows the blob held (the "nothing detected" placeholder included)
    detections: list[Detection] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        width, height = self.image_size
        return {"width": width, "height": height, "blob": self.blob,
                "threshold": self.threshold, "rows": self.rows,
                "detections": [d.to_dict() for d in self.detections]}


# --------------------------------------------------------------------------- the net's blob


def detection_layers(graph: NetGraph) -> list[LayerNode]:
    """The net's DetectionOutput layers, in Caffe order."""
    return [node for node in graph.layers if node.type == DETECTION_TYPE]


def detection_blob(graph: NetGraph, blob: str | None = None) -> str:
    """The name of the blob holding the detections: ``blob`` (checked), else the top of the
    net's one DetectionOutput layer."""
    if blob is not None:
        known = {b.name for b in graph.blobs.values()}
        if blob not in known:
            raise DetectionError(f"{graph.definition.source}: no blob named '{blob}'; "
                                 f"the net's blobs: {sorted(known)}")
        return blob
    layers = detection_layers(graph)
    if not layers:
        raise DetectionError(
            f"{graph.definition.source}: the net has no {DETECTION_TYPE} layer, so it is not an "
            f"SSD-style detector; name the blob holding [image_id, label, score, xmin, ymin, "
            f"xmax, ymax] rows with --blob")
    if len(layers) > 1:
        names = [f"'{node.name}' -> {graph.blobs[node.tops[0]].name}" for node in layers]
        raise DetectionError(f"{graph.definition.source}: {len(layers)} {DETECTION_TYPE} layers "
                             f"({', '.join(names)}); choose one blob with --blob")
    return graph.blobs[layers[0].tops[0]].name


def num_classes(graph: NetGraph) -> int | None:
    """``detection_output_param.num_classes`` of the net's one DetectionOutput layer, if set."""
    layers = detection_layers(graph)
    if len(layers) != 1 or not layers[0].param.HasField("detection_output_param"):
        return None
    return int(layers[0].param.detection_output_param.num_classes) or None


# --------------------------------------------------------------------------- rows -> boxes


def parse_rows(rows: np.ndarray, *, threshold: float = 0.5, image_id: int = 0,
               blob: str = "detection_out") -> np.ndarray:
    """The rows of a DetectionOutput blob that are detections of image ``image_id`` with score
    >= ``threshold``, as a (K, 7) float64 array sorted by score (highest first; ties keep the
    net's order). Placeholder rows (label < 0) are dropped."""
    array = np.asarray(rows, dtype=np.float64)
    if array.ndim < 2 or array.shape[-1] != 7 or any(d != 1 for d in array.shape[:-2]):
        raise DetectionError(f"blob '{blob}' has shape {tuple(array.shape)}; a DetectionOutput "
                             f"blob is (1, 1, N, 7) with rows {list(ROW_FIELDS)}")
    array = array.reshape(-1, 7)
    bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad.size:
        raise DetectionError(f"blob '{blob}': row {int(bad[0])} is not finite "
                             f"({array[bad[0]].tolist()})")
    kept = array[(array[:, 0] == image_id) & (array[:, 1] >= 0) & (array[:, 2] >= threshold)]
    return kept[np.argsort(-kept[:, 2], kind="stable")]


def to_pixels(corners: np.ndarray, image_size: tuple[int, int],
              view: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """(K, 4) corners relative to the net input (0..1) as pixels of the original image.

    ``image_size`` is (width, height); ``view`` is the part of the image the net input showed
    (:meth:`Preprocessing.view_box`; default the whole image). Boxes are clipped to the image.
    """
    width, height = image_size
    x0, y0, x1, y1 = view if view is not None else (0.0, 0.0, float(width), float(height))
    corners = np.asarray(corners, dtype=np.float64).reshape(-1, 4)
    scale = np.array([x1 - x0, y1 - y0, x1 - x0, y1 - y0])
    pixels = corners * scale + np.array([x0, y0, x0, y0])
    return np.clip(pixels, 0.0, np.array([width, height, width, height], dtype=np.float64))


def detections_from_rows(rows: np.ndarray, image_size: tuple[int, int], *,
                         threshold: float = 0.5, labels: Sequence[str] | None = None,
                         view: tuple[float, float, float, float] | None = None,
                         blob: str = "detection_out") -> list[Detection]:
    """The detections in a DetectionOutput blob: thresholded, in the image's pixels, named."""
    kept = parse_rows(rows, threshold=threshold, blob=blob)
    boxes = to_pixels(kept[:, 3:7], image_size, view)
    found = []
    for row, box in zip(kept, boxes):
        label = int(row[1])
        if labels is not None and label >= len(labels):
            raise DetectionError(f"blob '{blob}' has label {label}, but the labels name only "
                                 f"{len(labels)} class(es) (ids 0..{len(labels) - 1})")
        found.append(Detection(label=label, score=float(row[2]),
                               box=tuple(float(v) for v in box),
                               name=None if labels is None else labels[label]))
    return found


def check_threshold(threshold: float) -> float:
    if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise DetectionError(f"threshold {threshold}: expected a score between 0 and 1")
    return float(threshold)


def detect(net: CaffeNet, image: ImageInput, *, preprocessing: Preprocessing | None = None,
           threshold: float = 0.5, labels: Sequence[str] | None = None,
           blob: str | None = None) -> DetectionResult:
    """Run a detection net on one image and return its detections in the image's pixels.

    ``preprocessing`` defaults to the net's own (:func:`caffe2torch.preprocess.default_preprocessing`);
    ``labels`` are names indexed by label id (background first); ``blob`` defaults to the top of
    the net's DetectionOutput layer.
    """
    import torch

    from caffe2torch.preprocess import default_preprocessing
    threshold = check_threshold(threshold)
    graph = net.caffe.graph
    name = detection_blob(graph, blob)
    if len(net.caffe.input_names) != 1:
        raise DetectionError(f"{graph.definition.source}: the net takes "
                             f"{len(net.caffe.input_names)} inputs {net.caffe.input_names}; "
                             f"detection needs a net with one image input")
    prep = preprocessing or default_preprocessing(graph)
    picture = load_image(image)
    array = prep(picture)
    with torch.no_grad():
        rows = net(as_input(net, array[None]), outputs=[name])[name]
    rows = as_numpy(rows)
    size = (picture.width, picture.height)
    found = detections_from_rows(rows, size, threshold=threshold, labels=labels,
                                 view=prep.view_box((picture.height, picture.width)), blob=name)
    return DetectionResult(image_size=size, blob=name, threshold=threshold,
                           rows=int(rows.size // 7), detections=found)


# --------------------------------------------------------------------------- labels


def read_labels(path: str | os.PathLike[str]) -> list[str]:
    """Class names indexed by label id: a text file with one name per line (line 1 is label 0,
    the background of SSD nets; blank lines at the end are ignored), or an SSD ``LabelMap``
    prototxt (``item { name label display_name }``, as ``labelmap_voc.prototxt``)."""
    path = Path(path)
    text = read_text(path, DetectionError)
    if path.suffix == ".prototxt" or text.lstrip().startswith("item"):
        return _label_map(path, text)
    return name_lines(path, text, DetectionError, "label 0 (the background)")


def _label_map(path: Path, text: str) -> list[str]:
    from google.protobuf import text_format

    from caffe2torch.proto import caffe_pb2
    try:
        label_map = text_format.Parse(text, caffe_pb2.LabelMap())
    except text_format.ParseError as err:
        raise DetectionError(f"labels file {path}: not a LabelMap prototxt ({err})") from None
    by_id: dict[int, str] = {}
    for item in label_map.item:
        if item.label < 0 or item.label in by_id:
            raise DetectionError(f"labels file {path}: label {item.label} is negative or given "
                                 f"twice")
        by_id[item.label] = item.display_name or item.name
    missing = sorted(set(range(max(by_id, default=-1) + 1)) - set(by_id))
    if not by_id or missing:
        raise DetectionError(f"labels file {path}: no name for label(s) {missing or [0]}")
    return [by_id[i] for i in range(len(by_id))]


def check_labels(labels: Sequence[str], classes: int | None, source: str,
                 background: int | None = 0) -> None:
    """A list of names fits a DetectionOutput with ``classes`` classes (background included)."""
    if classes is None or len(labels) == classes:
        return
    ids = f"label ids 0..{classes - 1}"
    if background is not None and background >= 0:
        ids += f", {background} the background"
    hint = ""
    if len(labels) == classes - 1 and background == 0:
        hint = "; one short: add a first line naming the background class (label 0)"
    raise DetectionError(f"{source}: {len(labels)} label name(s), but the net's "
                         f"{DETECTION_TYPE} has num_classes {classes} ({ids}){hint}")


def background_label(graph: NetGraph) -> int | None:
    layers = detection_layers(graph)
    if len(layers) != 1:
        return None
    return int(layers[0].param.detection_output_param.background_label_id)


# --------------------------------------------------------------------------- output


def format_detections(detections: Sequence[Detection]) -> str:
    """A fixed-width table: label, score, x1 y1 x2 y2 (pixels, one decimal)."""
    header = ["label", "score", "x1", "y1", "x2", "y2"]
    lines = [[d.title, f"{d.score:.3f}", *(f"{v:.1f}" for v in d.box)] for d in detections]
    widths = [max(len(header[i]), *(len(c[i]) for c in lines)) if lines else len(header[i])
              for i in range(len(header))]

    def render(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([render(header), render(["-" * w for w in widths]),
                      *(render(c) for c in lines)])


def draw_detections(image: ImageInput, detections: Sequence[Detection]) -> Image.Image:
    """The image (RGB) with each box outlined and captioned "name score"."""
    from PIL import ImageDraw, ImageFont
    picture = load_image(image).copy()
    width, height = picture.size
    line = max(2, round(max(width, height) / 250))
    font = ImageFont.load_default(size=max(12, round(max(width, height) / 45)))
    draw = ImageDraw.Draw(picture)
    for d in detections:
        colour = PALETTE[d.label % len(PALETTE)]
        # pixel (i, j) covers [i, i + 1): a box ending at the image border x2 = width has
        # its last column at width - 1
        x1, y1, x2, y2 = (round(v) for v in d.box)
        draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=colour, width=line)
        caption = f"{d.title} {d.score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)
        text_w, text_h = right - left + 2 * line, bottom - top + 2 * line
        ty = y1 - text_h if y1 - text_h >= 0 else y1
        tx = min(x1, max(0, width - text_w))
        draw.rectangle([tx, ty, tx + text_w, ty + text_h], fill=colour)
        text = (0, 0, 0) if sum(colour) > 382 else (255, 255, 255)
        draw.text((tx + line - left, ty + line - top), caption, fill=text, font=font)
    return picture


def check_image_output(path: str | os.PathLike[str],
                       image: str | os.PathLike[str] | None = None) -> Path:
    """An output image path Pillow can write (by extension) in an existing folder, and not the
    input ``image`` itself; checked before any work."""
    from PIL import Image
    path = Path(path)
    extensions = Image.registered_extensions()
    if extensions.get(path.suffix.lower()) not in Image.SAVE:
        raise DetectionError(f"{path}: cannot write an image with extension '{path.suffix}'; "
                             f"use .png or .jpg")
    if not path.parent.is_dir():
        raise DetectionError(f"{path}: the folder {path.parent} does not exist")
    if path.is_dir():
        raise DetectionError(f"{path} is a folder; give an image file name")
    if image is not None and path.exists() and path.resolve() == Path(image).resolve():
        raise DetectionError(f"{path} is the input image; give another output file")
    return path
