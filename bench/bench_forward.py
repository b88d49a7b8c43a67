"""Forward speed on the CPU against OpenCV's dnn running the same prototxt and caffemodel.

Usage: python bench/bench_forward.py [--nets vgg_face,open_nsfw] [--repeat N] [--threads 2]
                                     [--explore] [--check]

Per net and batch size, in this process and interleaved (each round runs every model once, in
turn; medians and bests over --repeat rounds after two warm-up runs each), under
``torch.inference_mode`` with torch and OpenCV on the same number of threads:

  opencv      cv2.dnn.readNetFromCaffe(prototxt, caffemodel): the baseline
  plain       caffe2torch.build(prototxt, caffemodel): the converted net as built
  optimised   caffe2torch.optimize(plain)
  hand        a hand-written torch model with the same weights, where the net has one
              (VGG-Face: torchvision-style nn.Sequential VGG-16, in-place ReLUs)
  --explore   also optimize() with each layout choice (NCHW, channels_last)
  --compile   also torch.compile of the optimised model, its compile time printed

The caffemodels hold random weights (``caffe2torch.write_random_caffemodel``), written once to
bench/.cache/. Ratios are medians over OpenCV's median; the geometric mean is over every row.
Targets: optimised geometric mean <= 1.0x OpenCV with no row above 1.25x; plain VGG-Face within
1.05x of the hand-written model. ``--check`` exits 1 when one is missed.
Adding a net is one line in NETS.
"""
from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch
from torch import nn

import caffe2torch
from caffe2torch.build import CaffeNet

ZOO = ROOT / "model_zoo"
SHARED = ROOT.parent / "shared"
CACHE = ROOT / "bench" / ".cache"
GEOMEAN_TARGET, WORST_TARGET, HAND_TARGET = 1.0, 1.25, 1.05


def vgg16_sequential(net: CaffeNet) -> nn.Module:
    """VGG-16 as people write it by hand (torchvision's layout), with ``net``'s weights."""
    layers: list[nn.Module] = []
    convs = [m for m in net.children() if isinstance(m, nn.Conv2d)]
    blocks = (2, 2, 3, 3, 3)
    for size in blocks:
        for _ in range(size):
            conv = convs.pop(0)
            hand = nn.Conv2d(conv.in_channels, conv.out_channels, 3, padding=1)
            hand.load_state_dict(conv.state_dict())
            layers += [hand, nn.ReLU(inplace=True)]
        layers.append(nn.MaxPool2d(2, 2))
    layers.append(nn.Flatten())
    fcs = [m for m in net.children() if type(m).__name__ == "InnerProduct"]
    for i, fc in enumerate(fcs):
        linear = nn.Linear(fc.weight.shape[1], fc.weight.shape[0])
        linear.load_state_dict({"weight": fc.weight, "bias": fc.bias})
        layers.append(linear)
        if i < len(fcs) - 1:
            layers += [nn.ReLU(inplace=True), nn.Dropout(0.5)]
    layers.append(nn.Softmax(dim=1))
    return nn.Sequential(*layers).eval()


@dataclass
class Net:
    name: str
    prototxt: Path
    batches: tuple[int, ...] = (1,)
    hand_written: Callable[[CaffeNet], nn.Module] | None = None


NETS = [
    Net("vgg_face", ZOO / "vgg_face" / "deploy.prototxt", (1, 8), vgg16_sequential),
    Net("open_nsfw", SHARED / "models" / "open_nsfw" / "deploy.prototxt", (1, 8)),
    Net("googlenet", ZOO / "bvlc_googlenet" / "deploy.prototxt"),
    Net("mobilenet_v2", SHARED / "corpus" / "prototxt" / "mobilenet_v2_deploy.prototxt"),
    Net("squeezenet_v1.1", ZOO / "squeezenet_v1.1" / "deploy.prototxt"),
    Net("mobilenet_ssd", ZOO / "mobilenet_ssd" / "deploy.prototxt"),
]


def random_weights(net: Net) -> Path:
    path = CACHE / f"{net.name}_random.caffemodel"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        print(f"writing {path.relative_to(ROOT)} (once) ...", file=sys.stderr)
        caffe2torch.write_random_caffemodel(net.prototxt, path, seed=0)
    return path


# ----------------------------------------------------------------------------- models


def opencv_runner(net: Net, weights: Path) -> Callable[[np.ndarray], object]:
    import cv2

    model = cv2.dnn.readNetFromCaffe(str(net.prototxt), str(weights))
    model.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    model.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)

    def run(x: np.ndarray):
        model.setInput(x)
        return model.forward()
    return run


def torch_runner(model: nn.Module) -> Callable[[np.ndarray], object]:
    def run(x: np.ndarray):
        with torch.inference_mode():
            return model(torch.from_numpy(x))
    return run


def compiled_runner(model: CaffeNet, x: np.ndarray) -> tuple[Callable, float]:
    compiled = torch.compile(model.forward)
    start = time.perf_counter()
    with torch.inference_mode():
        compiled(torch.from_numpy(x))
    seconds = time.perf_counter() - start

    def run(x: np.ndarray):
        with torch.inference_mode():
            return compiled(torch.from_numpy(x))
    return run, seconds


def runners(net: Net, batch: int, explore: bool,
            compile_: bool) -> tuple[dict[str, Callable], list[str]]:
    weights = random_weights(net)
    graph = caffe2torch.load_graph(net.prototxt)
    name = graph.blobs[graph.inputs[0]].name
    shape = (batch, *graph.blobs[graph.inputs[0]].shape[1:])
    plain = caffe2torch.build(net.prototxt, weights, input_shapes={name: shape})
    found = {"opencv": opencv_runner(net, weights), "plain": torch_runner(plain),
             "optimised": torch_runner(caffe2torch.optimize(plain))}
    notes = []
    if net.hand_written is not None:
        found["hand"] = torch_runner(net.hand_written(plain))
    if explore:
        for layout in (False, True):
            label = "opt channels_last" if layout else "opt NCHW"
            found[label] = torch_runner(caffe2torch.optimize(plain, channels_last=layout))
    if compile_:
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        try:
            found["opt compiled"], seconds = compiled_runner(caffe2torch.optimize(plain), x)
            notes.append(f"torch.compile: first call {seconds:.1f} s")
        except Exception as err:  # noqa: BLE001 - exploring; report and go on
            notes.append(f"torch.compile failed: {type(err).__name__}: {err}"[:200])
    return found, notes


# ----------------------------------------------------------------------------- timing


def time_row(found: dict[str, Callable], x: np.ndarray, repeat: int) -> dict[str, list[float]]:
    outputs = {}
    for name, run in found.items():
        for _ in range(2):
            outputs[name] = run(x)
    times: dict[str, list[float]] = {name: [] for name in found}
    for _ in range(repeat):
        for name, run in found.items():
            gc.collect()
            start = time.perf_counter()
            run(x)
            times[name].append(time.perf_counter() - start)
    _check_outputs(outputs)
    return times


def _check_outputs(outputs: dict[str, object]) -> None:
    """Every model computed the same thing (a benchmark of a wrong model is no benchmark)."""
    reference = np.asarray(outputs["plain"]).reshape(-1)
    for name, value in outputs.items():
        value = np.asarray(value[0] if isinstance(value, tuple) else value).reshape(-1)
        if value.shape != reference.shape:  # rows a DetectionOutput keeps (OpenCV's differ)
            print(f"  note: {name} gives {value.size} output values, plain {reference.size} "
                  "(a data-dependent row count; not compared)")
            continue
        error = np.abs(value - reference).max() / max(np.abs(reference).max(), 1e-30)
        if error > 1e-3:
            print(f"  warning: {name} differs from plain by {error:.2g} (relative max)")


def report_row(net: Net, batch: int, times: dict[str, list[float]]) -> dict[str, float]:
    median = {name: statistics.median(t) for name, t in times.items()}
    best = {name: min(t) for name, t in times.items()}
    base = median["opencv"]
    cells = [f"{net.name} b{batch}".ljust(20)]
    for name in times:
        ratio = "" if name == "opencv" else f" {median[name] / base:5.2f}x"
        cells.append(f"{name} {median[name] * 1e3:8.1f} ({best[name] * 1e3:.1f}){ratio}")
    print("  ".join(cells))
    ratios = {name: median[name] / base for name in times if name != "opencv"}
    if "hand" in median:
        ratios["plain/hand"] = median["plain"] / median["hand"]
        print(f"{'':20}  plain / hand-written: {ratios['plain/hand']:.2f}x "
              f"(best {best['plain'] / best['hand']:.2f}x)")
    return ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", help="comma-separated net names (default: all): "
                        + ", ".join(n.name for n in NETS))
    parser.add_argument("--batches", help="comma-separated batch sizes (default: each net's)")
    parser.add_argument("--repeat", type=int, default=10, help="timed rounds (10)")
    parser.add_argument("--threads", type=int, default=2, help="threads for torch and OpenCV")
    parser.add_argument("--explore", action="store_true",
                        help="also time optimize() with each layout")
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile of the optimised model (minutes)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    import cv2

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    chosen = NETS
    if args.nets:
        wanted = args.nets.split(",")
        unknown = sorted(set(wanted) - {n.name for n in NETS})
        if unknown:
            parser.error(f"unknown net(s) {unknown}; known: {[n.name for n in NETS]}")
        chosen = [n for n in NETS if n.name in wanted]
    print(f"torch {torch.__version__}, OpenCV {cv2.__version__}, {args.threads} threads, "
          f"{os.cpu_count()} CPUs; ms: median (best) of {args.repeat}; x: median / OpenCV's")
    rows: list[dict[str, float]] = []
    for net in chosen:
        batches = [int(b) for b in args.batches.split(",")] if args.batches else net.batches
        for batch in batches:
            found, notes = runners(net, batch, args.explore, args.compile)
            graph = caffe2torch.load_graph(net.prototxt)
            shape = (batch, *graph.blobs[graph.inputs[0]].shape[1:])
            x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
            rows.append(report_row(net, batch, time_row(found, x, args.repeat)))
            for note in notes:
                print(f"{'':20}  {note}")
            del found
            gc.collect()
    return 0 if summarise(rows) or not args.check else 1


def summarise(rows: list[dict[str, float]]) -> bool:
    ok = True
    for name in rows[0]:
        if name == "plain/hand":
            continue
        values = [r[name] for r in rows if name in r]
        geomean = math.exp(sum(math.log(v) for v in values) / len(values))
        print(f"geometric mean {name} / opencv: {geomean:.2f}x (worst {max(values):.2f}x)")
    optimised = [r["optimised"] for r in rows]
    geomean = math.exp(sum(math.log(v) for v in optimised) / len(optimised))
    met = geomean <= GEOMEAN_TARGET and max(optimised) <= WORST_TARGET
    print(f"target optimised geomean <= {GEOMEAN_TARGET}x, none above {WORST_TARGET}x: "
          f"{'met' if met else 'MISSED'}")
    ok = ok and met
    hands = [r["plain/hand"] for r in rows if "plain/hand" in r]
    if hands:
        met = max(hands) <= HAND_TARGET
        print(f"target plain <= {HAND_TARGET}x hand-written: {max(hands):.2f}x "
              f"{'met' if met else 'MISSED'}")
        ok = ok and met
    return ok


if __name__ == "__main__":
    sys.exit(main())
