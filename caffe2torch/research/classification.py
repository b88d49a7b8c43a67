"""Image classification: run a net on images and name its top classes.

The scores are the net's output blob (default: its only output), one row of K classes per image
((N, K) or (N, K, 1, 1)). When the blob is a Softmax layer's top they are probabilities already;
otherwise (a net ending in its last InnerProduct) a softmax is applied and the result says so.
Labels are one name per class, by output index: a ``--labels`` file (one per line; Caffe's
``synset_words.txt`` lines ``n01440764 tench, Tinca tinca`` are kept whole), else the model zoo
entry's, else none (class indices only)::

    from caffe2torch import build
    from caffe2torch.research.classification import classify
    from caffe2torch.zoo import get_entry
    entry = get_entry("bvlc_alexnet")
    net = build(entry.prototxt, "bvlc_alexnet.caffemodel")
    result = classify(net, ["cat.jpg"], top=5, labels=entry.labels)
    for p in result.images[0].predictions:
        print(p.index, p.label, p.probability)
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from caffe2torch.errors import Caffe2TorchError
from caffe2torch.research.labels import name_lines, read_text

if TYPE_CHECKING:
    from caffe2torch.build import CaffeNet
    from caffe2torch.preprocess import ImageInput, Preprocessing


class ClassifyError(Caffe2TorchError):
    """A net, blob, option or labels file that cannot give class predictions."""


@dataclass
class Prediction:
    rank: int
    index: int
    label: str | None
    probability: float


@dataclass
class ImagePredictions:
    image: str
    predictions: list[Prediction]


@dataclass
class ClassifyResult:
    """What :func:`classify` found: per image, the top classes by probability."""

    blob: str
    classes: int
    softmax_applied: bool  # the blob held scores, not a Softmax's probabilities
    images: list[ImagePredictions]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def classify(net: CaffeNet, images: Sequence[ImageInput], *, top: int = 5,
             labels: Sequence[str] | None = None, preprocessing: Preprocessing | None = None,
             blob: str | None = None) -> ClassifyResult:
    """The ``top`` classes of each image, most probable first."""
    import torch

    from caffe2torch.preprocess import default_preprocessing

    check_top(top)
    if not images:
        raise ClassifyError("no images given to classify")
    blob = blob or output_blob(net)
    classes = class_count(net, blob)
    if labels is not None:
        check_class_labels(labels, classes, "labels")
    prep = preprocessing or default_preprocessing(net.caffe.graph)
    softmax = not _is_softmax_top(net, blob)
    found = []
    for image in images:
        scores = _scores(net, prep(image)[None], blob)
        probabilities = torch.softmax(scores, dim=1)[0] if softmax else scores[0]
        values, indices = torch.topk(probabilities, min(top, classes))
        predictions = [Prediction(rank=rank, index=int(i), probability=float(v),
                                  label=None if labels is None else labels[int(i)])
                       for rank, (v, i) in enumerate(zip(values, indices, strict=True), 1)]
        found.append(ImagePredictions(image=_image_name(image), predictions=predictions))
    return ClassifyResult(blob=blob, classes=classes, softmax_applied=softmax, images=found)


def check_top(top: int) -> int:
    if top < 1:
        raise ClassifyError(f"--top {top}: expected at least 1 class to show")
    return top


def read_class_labels(path: str | os.PathLike[str]) -> list[str]:
    """Class names by output index from a text file: one per line, blank lines at the end
    ignored (a ``synset_words.txt`` line ``n01440764 tench, Tinca tinca`` is one name)."""
    return name_lines(path, read_text(path, ClassifyError), ClassifyError, "class 0")


def check_class_labels(labels: Sequence[str], classes: int, source: str) -> None:
    if len(labels) != classes:
        raise ClassifyError(f"{source}: {len(labels)} label name(s), but the net's output has "
                            f"{classes} classes; expected one name per class, by output index")


def format_classification(result: ClassifyResult) -> str:
    """A table per image: rank, class index, probability, label."""
    lines: list[str] = []
    for item in result.images:
        if lines:
            lines.append("")
        lines.append(item.image)
        rows = [("rank", "class", "probability", "label")]
        rows += [(str(p.rank), str(p.index), f"{p.probability:.4f}", p.label or "-")
                 for p in item.predictions]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        for row in rows:
            cells = [row[i].rjust(widths[i]) for i in range(3)]
            lines.append(("  " + "  ".join(cells) + "  " + row[3]).rstrip())
    return "\n".join(lines)


# ---------------------------------------------------------------------- helpers


BLOB_HINT = "; choose the class scores with --blob"


def output_blob(net: CaffeNet, hint: str = BLOB_HINT) -> str:
    """The net's only output (the class scores unless ``--blob`` says otherwise)."""
    outputs = net.caffe.output_names
    if len(outputs) != 1:
        raise ClassifyError(f"net '{net.caffe.graph.name}' has {len(outputs)} outputs "
                            f"{list(outputs)}{hint}")
    return outputs[0]


def class_count(net: CaffeNet, blob: str, hint: str = BLOB_HINT) -> int:
    """K for a blob of shape (N, K) or (N, K, 1, 1); raises for any other blob (``hint`` ends
    the message)."""
    graph = net.caffe.graph
    if blob not in net.caffe.blob_nodes:
        raise ClassifyError(f"no blob named '{blob}' in net '{graph.name}'; its outputs: "
                            f"{list(net.caffe.output_names)}")
    shape = graph.blob(blob).shape
    if shape is None or not (len(shape) == 2 or (len(shape) == 4 and shape[2:] == (1, 1))):
        detection = any(node.type == "DetectionOutput" for node in graph.layers)
        hint = "; for a detection net use caffe2torch detect" if detection else hint
        shown = "?" if shape is None else "x".join(map(str, shape))
        raise ClassifyError(f"blob '{blob}' has shape {shown}; expected one row of class "
                            f"scores per image (N x K){hint}")
    return int(shape[1])


def _is_softmax_top(net: CaffeNet, blob: str) -> bool:
    graph = net.caffe.graph
    for node in graph.layers:
        if node.type == "Softmax" and any(graph.blobs[t].name == blob for t in node.tops):
            return True
    return False


def _scores(net: CaffeNet, array, blob: str):
    import torch

    from caffe2torch.devices import as_input
    with torch.no_grad():
        value = net(as_input(net, array), outputs=[blob])[blob]
    return value.reshape(value.shape[0], -1).float().cpu()


def _image_name(image: Any) -> str:
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    return f"<{type(image).__name__}>"
