"""Check a conversion layer by layer against OpenCV's Caffe importer (an independent reading).

OpenCV (4.x; version 5 dropped the Caffe importer) reads the same prototxt and caffemodel; both
nets get the same input and every layer's first top is compared. OpenCV names outputs by layer,
so the comparison is per layer (``CaffeNet.layer_outputs``), which also shows a blob before the
in-place layers that follow it. Where OpenCV is known to disagree with Caffe itself the row
carries a note: there Caffe (and caffe2torch) may be right and OpenCV wrong.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from caffe2torch.api import InputShapes, build, load_graph
from caffe2torch.devices import as_input, as_numpy
from caffe2torch.errors import Caffe2TorchError
from caffe2torch.ir.graph import LayerNode, NetGraph
from caffe2torch.preprocess import ImageInput, Preprocessing, default_preprocessing

Shape = tuple[int, ...]

# Layer types where OpenCV 4.x is known to differ from Caffe (../shared/CAFFE_SEMANTICS.md and
# the OPENCV_DIFFERS lists in tests/); there Caffe's formula, which caffe2torch follows, is right.
OPENCV_DIFFERENCES = {
    "LRN": "OpenCV's LRN was seen to differ from Caffe's on few channels with a large alpha "
           "(2%); it also ignores k and has its own default for an unset alpha",
    "MVN": "OpenCV's MVN was seen to differ from Caffe's (3%): it adds eps to the variance, "
           "Caffe to the standard deviation, and keeps the input rank",
}
OPENCV_MISSING = {"Bias": "OpenCV 4.x has no Bias layer",
                  "Threshold": "OpenCV 4.x has no Threshold layer"}


def opencv_difference(node: LayerNode) -> str:
    """Why OpenCV may disagree with Caffe on this layer ('' where it is not known to)."""
    p = node.param
    if node.type == "LRN":
        found = []
        if not p.lrn_param.HasField("alpha"):
            found.append("OpenCV uses its own default for the unset alpha (Caffe: 1)")
        if p.lrn_param.norm_region == p.lrn_param.ACROSS_CHANNELS and p.lrn_param.k != 1:
            found.append(f"OpenCV ignores k (uses 1, Caffe {p.lrn_param.k:g})")
        return "; ".join(found) or OPENCV_DIFFERENCES["LRN"]
    if node.type == "Log" and (p.log_param.base != -1 or p.log_param.scale != 1
                               or p.log_param.shift != 0):
        return "OpenCV's Log ignores base, scale and shift (computes ln x)"
    if node.type == "Slice" and p.slice_param.HasField("slice_dim"):
        return "OpenCV ignores the legacy slice_dim and slices axis 1"
    if node.type == "Concat" and p.concat_param.HasField("concat_dim"):
        return "OpenCV ignores the legacy concat_dim and concatenates axis 1"
    if node.type == "Scale" and len(node.bottoms) == 2 and p.scale_param.bias_term:
        return "OpenCV's Scale with a second bottom and bias_term ignores the scale bottom"
    return OPENCV_DIFFERENCES.get(node.type, "")


class VerifyError(Caffe2TorchError):
    """OpenCV is missing or cannot read the net, or the input does not fit."""


@dataclass
class LayerComparison:
    """One layer's first top, ours against OpenCV's."""

    layer: str
    type: str
    top: str
    shape: Shape
    max_abs: float | None = None
    max_rel: float | None = None
    mean_abs: float | None = None
    status: str = "ok"  # "ok", "over tolerance", or "skipped: why"
    note: str = ""

    @property
    def compared(self) -> bool:
        return self.max_rel is not None


@dataclass
class VerifyReport:
    prototxt: str
    weights: str
    input: str
    tolerance: float
    opencv_version: str
    rows: list[LayerComparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[LayerComparison]:
        return [row for row in self.rows if row.status == "over tolerance"]

    @property
    def passed(self) -> bool:
        return not self.failures and any(row.compared for row in self.rows)

    @property
    def verdict(self) -> str:
        compared = [row for row in self.rows if row.compared]
        if not compared:
            return "FAIL: no layer could be compared with OpenCV"
        layers = len({row.layer for row in compared})
        if self.passed:
            worst = max(compared, key=lambda r: r.max_rel or 0.0)
            return (f"PASS: {layers} layers agree with OpenCV within relative "
                    f"{self.tolerance:g} (largest {worst.max_rel:.2g} at '{worst.layer}')")
        first = self.failures[0]
        failing = len({row.layer for row in self.failures})
        text = (f"FAIL: {failing} of {layers} layers over relative "
                f"{self.tolerance:g}; the first is '{first.layer}' ({first.type}), "
                f"max relative error {first.max_rel:.3g}")
        if first.note:
            text += (f" -- where OpenCV is known to differ from Caffe ({first.note}); the "
                     "layers after it inherit the difference")
        return text


def verify(net: str | os.PathLike[str], weights: str | os.PathLike[str], *,
           image: ImageInput | None = None, preprocessing: Preprocessing | None = None,
           tolerance: float = 1e-4, seed: int = 0, input_shapes: InputShapes | None = None,
           phase: str = "TEST", device: str | torch.device | None = None,
           dtype: str | torch.dtype | None = None,
           variants: Mapping[str, str] | None = None) -> VerifyReport:
    """Run the converted net and OpenCV's on one input; compare every layer.

    The input is ``image`` preprocessed (``preprocessing``, else the net's defaults, see
    :func:`caffe2torch.preprocess.default_preprocessing`), else seeded standard-normal values
    of the inputs' declared shapes. ``device`` / ``dtype`` run the converted net there (OpenCV
    runs on the CPU in float32; half precision needs a larger ``tolerance``).
    """
    cv2 = _import_opencv()
    graph = load_graph(net, input_shapes, phase=phase, variants=variants)
    inputs, described = _make_inputs(graph, image, preprocessing, seed)
    shapes = {name: tuple(value.shape) for name, value in inputs.items()}
    model = build(net, weights, input_shapes=shapes, phase=phase, device=device, dtype=dtype,
                  variants=variants)
    ours = _our_layer_outputs(model, inputs)
    report = VerifyReport(prototxt=str(net), weights=str(weights), input=described,
                          tolerance=tolerance, opencv_version=cv2.__version__)
    theirs = _opencv_layer_outputs(cv2, model.caffe.graph, Path(net), Path(weights), inputs,
                                   list(ours))
    for node in model.caffe.graph.layers:
        if node.role == "input":
            continue
        for index, top in enumerate(node.tops):
            row = LayerComparison(layer=node.name, type=node.type,
                                  top=model.caffe.graph.blobs[top].name,
                                  shape=tuple(ours[node.name][index].shape),
                                  note=opencv_difference(node))
            if node.name not in theirs:
                row.status = "skipped: OpenCV has no layer of this name"
            elif index > 0:  # OpenCV keeps only top 0; it may reuse the others' memory
                row.status = "skipped: OpenCV keeps only top 0 (checked by the layers reading it)"
            else:
                _compare(row, ours[node.name][0], theirs[node.name], tolerance)
            report.rows.append(row)
    return report


def _import_opencv():
    try:
        import cv2
    except ImportError:
        raise VerifyError("verify compares against OpenCV's Caffe importer, and OpenCV is not "
                          "installed; pip install 'opencv-python-headless<5'") from None
    major = int(str(cv2.__version__).split(".")[0])
    if major >= 5 or not hasattr(getattr(cv2, "dnn", None), "readNetFromCaffe"):
        raise VerifyError(f"OpenCV {cv2.__version__} has no Caffe importer (OpenCV 5 dropped "
                          "it); pip install 'opencv-python-headless<5'")
    return cv2


def _make_inputs(graph: NetGraph, image: ImageInput | None, preprocessing: Preprocessing | None,
                 seed: int) -> tuple[dict[str, np.ndarray], str]:
    names = [graph.blobs[b].name for b in graph.inputs]
    if image is not None:
        if len(names) != 1:
            raise VerifyError(f"an image can feed a net with one input; this one has {names}")
        prep = preprocessing or default_preprocessing(graph)
        array = prep(image)[None]
        shown = image if isinstance(image, (str, os.PathLike)) else type(image).__name__
        described = f"image {shown} -> {'x'.join(map(str, array.shape))}; {prep.describe()}"
        return {names[0]: array}, described
    rng = np.random.default_rng(seed)
    inputs = {name: rng.standard_normal(graph.blobs[b].shape).astype(np.float32)
              for name, b in zip(names, graph.inputs, strict=True)}
    shapes = ", ".join(f"{n} {'x'.join(map(str, v.shape))}" for n, v in inputs.items())
    return inputs, f"random standard normal (seed {seed}): {shapes}"


def _our_layer_outputs(model, inputs: Mapping[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    with torch.no_grad():
        tensors = {name: as_input(model, value) for name, value in inputs.items()}
        outputs = model.layer_outputs(**tensors)
    return {name: [as_numpy(top) for top in tops] for name, tops in outputs.items() if tops}


def _opencv_layer_outputs(cv2, graph: NetGraph, prototxt: Path, weights: Path,
                          inputs: Mapping[str, np.ndarray],
                          layers: list[str]) -> dict[str, np.ndarray]:
    """The first top of each layer OpenCV knows, by our layer name. OpenCV names a few layers
    after their first top; those are asked for by that name. (Only a layer's first top is
    kept from reuse by OpenCV, so later tops are not asked for.)"""
    with tempfile.TemporaryDirectory(prefix="caffe2torch-verify-") as tmp:
        readable = _opencv_prototxt(graph, prototxt, Path(tmp))
        try:
            cv_net = cv2.dnn.readNetFromCaffe(str(readable), str(weights))
        except cv2.error as err:
            missing = sorted({OPENCV_MISSING[n.type] for n in graph.layers
                              if n.type in OPENCV_MISSING})
            hint = f" ({'; '.join(missing)}: verify cannot compare this net)" if missing else ""
            raise VerifyError(f"OpenCV cannot read {prototxt} / {weights}: "
                              f"{_cv_message(err)}{hint}") from None
    cv_net.enableFusion(False)
    cv_net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    cv_net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    known = set(cv_net.getLayerNames())
    asked = {}
    for name in layers:
        top = graph.blobs[graph.layer(name).tops[0]].name
        if name in known:
            asked[name] = name
        elif top in known and top not in layers:
            asked[name] = top
    try:
        for name, value in inputs.items():
            cv_net.setInput(np.ascontiguousarray(value), name)
        outputs = cv_net.forward(list(asked.values())) if asked else []
    except cv2.error as err:
        raise VerifyError(f"OpenCV failed to run {prototxt}: {_cv_message(err)}") from None
    return {name: np.asarray(out) for name, out in zip(asked, outputs, strict=True)}


def _opencv_prototxt(graph: NetGraph, prototxt: Path, tmp: Path) -> Path:
    """The prototxt itself, unless its inputs come from data layers OpenCV cannot read."""
    if all(node.type == "Input" for node in graph.layers if node.role == "input") \
            and prototxt.is_file():
        return prototxt
    from caffe2torch.ir.deploy import deploy_prototxt
    path = tmp / "deploy.prototxt"
    path.write_text(deploy_prototxt(graph))
    return path


def _cv_message(err: Exception) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1] if lines else repr(err)


def _compare(row: LayerComparison, ours: np.ndarray, theirs: np.ndarray, tolerance: float) -> None:
    if ours.size != theirs.size:
        row.status = (f"skipped: OpenCV's output is {'x'.join(map(str, theirs.shape))}, "
                      f"ours {'x'.join(map(str, ours.shape))}")
        return
    actual = ours.astype(np.float64).ravel()
    expected = theirs.astype(np.float64).ravel()
    same = (actual == expected) | (np.isnan(actual) & np.isnan(expected))
    diff = np.where(same, 0.0, np.abs(actual - expected))
    diff = np.nan_to_num(diff, nan=np.inf)
    finite = expected[np.isfinite(expected)]
    scale = max(float(np.abs(finite).max(initial=0.0)), 1e-30)
    row.max_abs = float(diff.max(initial=0.0))
    row.mean_abs = float(diff.mean()) if diff.size else 0.0
    row.max_rel = row.max_abs / scale
    row.status = "ok" if row.max_rel <= tolerance else "over tolerance"


def format_report(report: VerifyReport) -> str:
    """The per-layer table and the verdict, as ``caffe2torch verify`` prints them."""
    header = ["layer", "type", "top", "shape", "max abs", "max rel", "mean abs", "status"]
    cells = []
    for row in report.rows:
        numbers = ["-", "-", "-"] if not row.compared else [
            f"{row.max_abs:.2e}", f"{row.max_rel:.2e}", f"{row.mean_abs:.2e}"]
        status = row.status + (" (see note)" if row.note else "")
        cells.append([row.layer, row.type, row.top, "x".join(map(str, row.shape)) or "-",
                      *numbers, status])
    widths = [max([len(header[i])] + [len(c[i]) for c in cells]) for i in range(len(header))]

    def render(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if 4 <= i <= 6 else v.ljust(w)
                         for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    lines = [f"{report.prototxt} + {report.weights} against OpenCV {report.opencv_version}",
             f"input: {report.input}", "", render(header), render(["-" * w for w in widths])]
    lines += [render(c) for c in cells]
    notes = dict.fromkeys(f"{row.type}: {row.note}" for row in report.rows if row.note)
    lines.append("")
    lines += [f"note: {n}" for n in notes]
    lines += [f"note: {n}" for n in report.notes]
    lines.append(report.verdict)
    return "\n".join(lines)
