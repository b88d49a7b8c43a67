"""Feature extraction against the model's forward alone, at the same batch size.

Usage: python bench/bench_extract.py [--net P --weights W --blobs B] [--images N]
           [--batch-size B] [--workers W] [--device cpu|cuda|cuda:N|mps] [--dtype D] [--repeat R]

A folder of N JPEG photographs (crops of matplotlib's sample photographs at varied sizes) is
written once to bench/.cache/. Then, in this process, interleaved R times (best and median):

  forward   the net on a preprocessed batch already on the device, N / B times: the ceiling
  loader    reading, decoding and preprocessing the N files with the workers (no net)
  extract   caffe2torch.research.extract_features over the folder: read, preprocess, forward,
            copy back and write, overlapped

Printed: images per second of each and extract / forward. When extraction is well below the
forward and the loader is not far above it, the loader is the bottleneck (give more --workers).
The net defaults to open_nsfw (../shared/models/open_nsfw, real weights, ResNet-50-1by2 at
224x224, blob ``pool``) and else VGG-16's prototxt from the model zoo with random weights.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

import caffe2torch
from caffe2torch.devices import placement_of
from caffe2torch.preprocess import Preprocessing, default_preprocessing, list_images
from caffe2torch.research import extract_features
from caffe2torch.research.extract import _load_tensor, _loaded_batches

CACHE = ROOT / "bench" / ".cache"
OPEN_NSFW = ROOT.parent / "shared" / "models" / "open_nsfw"


def make_photos(folder: Path, count: int) -> Path:
    """``count`` JPEG photographs in ``folder`` (written once): crops of matplotlib's sample
    photographs, 180 to 500 pixels wide."""
    from matplotlib import cbook
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    if len(list_images(folder)) == count:
        return folder
    sources = [Image.open(cbook.get_sample_data(name, asfileobj=False)).convert("RGB")
               for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")]
    rng = np.random.default_rng(0)
    for i in range(count):
        source = sources[i % 5 == 4]
        w, h = source.size
        left, top = int(rng.integers(0, w // 4)), int(rng.integers(0, h // 4))
        crop = source.crop((left, top, left + w * 3 // 4, top + h * 3 // 4))
        width = int(rng.integers(180, 500))
        crop.resize((width, width * crop.height // crop.width)).save(
            folder / f"photo{i:05d}.jpg", quality=90)
    return folder


def default_net() -> tuple[Path, Path | None, str, Preprocessing | None]:
    if (OPEN_NSFW / "resnet_50_1by2_nsfw.caffemodel").is_file():
        return (OPEN_NSFW / "deploy.prototxt", OPEN_NSFW / "resnet_50_1by2_nsfw.caffemodel",
                "pool", Preprocessing(size=(224, 224), mean=[104.0, 117.0, 123.0]))
    return ROOT / "model_zoo" / "vgg16" / "deploy.prototxt", None, "fc7", None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def forward_rate(net, batch: torch.Tensor, blobs: list[str], batches: int) -> float:
    """Images per second of the forward alone (the batch already on the device)."""
    with torch.no_grad():
        net(batch, outputs=blobs)  # warm up (cuDNN picks its algorithms)
        synchronize(batch.device)
        start = time.perf_counter()
        for _ in range(batches):
            net(batch, outputs=blobs)
        synchronize(batch.device)
    return batches * batch.shape[0] / (time.perf_counter() - start)


def loader_rate(folder: Path, prep: Preprocessing, batch_size: int, workers: int,
                pin: bool) -> float:
    files = list_images(folder)
    batches = [files[i:i + batch_size] for i in range(0, len(files), batch_size)]
    start = time.perf_counter()
    for _ in _loaded_batches(batches, prep, folder, workers, pin):
        pass
    return len(files) / (time.perf_counter() - start)


def extract_rate(net, folder: Path, prep: Preprocessing, blobs: list[str], batch_size: int,
                 workers: int) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        result = extract_features(net, folder, blobs, Path(scratch) / "features.npz",
                                  preprocessing=prep, batch_size=batch_size, workers=workers,
                                  resume=False)
        return result.total / (time.perf_counter() - start)


def bench(net, folder: Path, prep: Preprocessing, blobs: list[str], batch_size: int,
          workers: int, repeat: int) -> dict[str, list[float]]:
    """Images per second of forward, loader and extract, ``repeat`` times interleaved."""
    placement = placement_of(net)
    files = list_images(folder)
    _, sample, _ = _load_tensor(files[:batch_size], prep, folder, False)
    batch = sample.to(placement.device, placement.dtype)
    rates: dict[str, list[float]] = {"forward": [], "loader": [], "extract": []}
    for _ in range(repeat):
        rates["forward"].append(forward_rate(net, batch, blobs, max(1, len(files) // batch_size)))
        rates["loader"].append(loader_rate(folder, prep, batch_size, workers,
                                           placement.device.type == "cuda"))
        rates["extract"].append(extract_rate(net, folder, prep, blobs, batch_size, workers))
    return rates


def report(rates: dict[str, list[float]]) -> str:
    lines = [f"{'':10} {'best img/s':>11} {'median':>9}"]
    for name, values in rates.items():
        lines.append(f"{name:10} {max(values):11.1f} {statistics.median(values):9.1f}")
    ratio = max(rates["extract"]) / max(rates["forward"])
    lines.append(f"extract / forward (best): {ratio:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--net", type=Path, help="prototxt (default: open_nsfw, else VGG-16)")
    parser.add_argument("--weights", type=Path, help="caffemodel (default: the net's, or random)")
    parser.add_argument("--blobs", help="blobs to extract, comma-separated")
    parser.add_argument("--images", type=int, default=256, help="photographs (default 256)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-optimize", action="store_true",
                        help="time the plain net (the extract command runs the optimised one)")
    args = parser.parse_args(argv)
    net_path, weights, blob, prep = default_net()
    if args.net:
        net_path, weights, prep = args.net, args.weights, None
    blobs = (args.blobs or blob).split(",")
    net = caffe2torch.build(net_path, weights, device=args.device, dtype=args.dtype)
    prep = prep or default_preprocessing(net.caffe.graph)
    if not args.no_optimize:  # what the extract command runs
        net = caffe2torch.optimize(net, keep=blobs, copy_modules=False)
    folder = make_photos(CACHE / f"photos_{args.images}", args.images)
    rates = bench(net, folder, prep, blobs, args.batch_size, args.workers, args.repeat)
    print(f"{net_path.name} ({net.caffe.graph.name}), blobs {blobs}, {args.images} photographs, "
          f"batch {args.batch_size}, {args.workers} workers, {args.device} {args.dtype}, "
          f"{'plain' if args.no_optimize else 'optimised'} net, "
          f"{torch.get_num_threads()} torch threads")
    print(report(rates))
    return 0


if __name__ == "__main__":
    sys.exit(main())
