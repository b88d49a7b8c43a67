"""The GPU check: run once on a CUDA machine, in a few minutes; prints a report, exit 1 on a miss.

Usage: python bench/gpu_check.py [--vgg-face-weights VGG_FACE.caffemodel] [--json OUT.json]
           [--photos N] [--skip-torchrun]

It has NOT been run where it was written (no GPU there): the CPU runs only ``--help`` and the
import. What it checks, on ``cuda:0``:

1. fp32: VGG-Face (model_zoo/vgg_face; the real weights with ``--vgg-face-weights``, else random
   weights of its exact shapes, written once to bench/.cache/) and open_nsfw (real weights,
   ../shared/models/open_nsfw): every blob on CUDA within 1e-4 (max |cuda - cpu| / max |cpu|)
   of the CPU, on real photographs (crops of matplotlib's sample photographs), with TF32 off
   (torch lets cuDNN convolve in TF32 by default, 10-bit mantissas: that error is printed too).
2. fp16 and bf16: top-1 agreement with fp32 over the photographs, and the max relative error of
   the last blobs (open_nsfw ``prob``, VGG-Face ``fc7`` and ``prob``). With random VGG-Face
   weights its top-1 is near a tie, so only open_nsfw's top-1 must agree there.
3. throughput at batch 64, 224x224: the converted VGG-Face against a hand-written torch VGG-16
   (nn.Sequential) holding the same weights, in fp32 (TF32 off and on), fp16 and bf16; and
   extraction (read, preprocess, forward, write) against the forward alone
   (bench_extract.py's measurement).
4. with two GPUs or more: ``torchrun --nproc-per-node 2 -m caffe2torch extract --device cuda``
   over the photographs against one process on cuda:0 (same files in the same order, values
   within 1e-4; cuDNN may pick other algorithms in another process, so not bit for bit).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch
from torch import nn

import caffe2torch
from caffe2torch.preprocess import Preprocessing, list_images

CACHE = ROOT / "bench" / ".cache"
VGG_FACE = ROOT / "model_zoo" / "vgg_face" / "deploy.prototxt"
OPEN_NSFW = ROOT.parent / "shared" / "models" / "open_nsfw"
FP32_TOLERANCE = 1e-4
HALF = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def rel_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    expected = expected.double().cpu()
    scale = float(expected.abs().max()) or 1.0
    return float((actual.double().cpu() - expected).abs().max()) / scale


class Report:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, check: str, value, passed: bool | None = None, note: str = "") -> None:
        self.rows.append({"check": check, "value": value, "passed": passed, "note": note})
        mark = {True: "ok  ", False: "MISS", None: "    "}[passed]
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        print(f"[{mark}] {check}: {shown}" + (f"  ({note})" if note else ""), flush=True)

    @property
    def passed(self) -> bool:
        return all(row["passed"] is not False for row in self.rows)


def photographs(count: int, size: int = 224) -> tuple[Path, torch.Tensor]:
    """The bench folder of photographs and ``count`` of them as a (count, 3, size, size) BGR
    batch, mean-subtracted."""
    from bench_extract import make_photos
    folder = make_photos(CACHE / "photos_256", 256)
    prep = Preprocessing(size=(size, size), mean=[104.0, 117.0, 123.0])
    files = list_images(folder)[:count]
    return folder, torch.from_numpy(np.stack([prep(folder / f) for f in files]))


def vgg_face_weights(given: Path | None) -> tuple[Path, bool]:
    if given is not None:
        return given, True
    path = CACHE / "vgg_face_random_v2.caffemodel"
    if not path.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        print(f"writing random VGG-Face weights to {path} (about 30 s)", flush=True)
        caffe2torch.write_random_caffemodel(VGG_FACE, path, seed=0)
    return path, False


def check_fp32(report: Report, name: str, prototxt: Path, weights: Path, x: torch.Tensor,
               device: str) -> dict[str, torch.Tensor]:
    """Every blob on the GPU against the CPU; returns the CPU blobs."""
    cpu = caffe2torch.build(prototxt, weights)
    blobs = list(cpu.caffe.blob_nodes)
    with torch.no_grad():
        expected = cpu(x, outputs=blobs)
    del cpu
    gpu = caffe2torch.build(prototxt, weights, device=device)
    for tf32 in (False, True):
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        with torch.no_grad():
            found = gpu(x.to(device), outputs=blobs)
        worst_blob, worst = max(((b, rel_error(found[b], expected[b])) for b in blobs),
                                key=lambda item: item[1])
        if tf32:
            report.add(f"{name} fp32 with TF32 (torch's default for convolutions): worst blob",
                       worst, None, f"'{worst_blob}'")
        else:
            report.add(f"{name} fp32 on CUDA vs CPU, every blob ({len(blobs)}): worst",
                       worst, worst <= FP32_TOLERANCE, f"'{worst_blob}', tolerance 1e-4")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    return expected


def check_half(report: Report, name: str, prototxt: Path, weights: Path, x: torch.Tensor,
               device: str, expected: dict[str, torch.Tensor], outputs: list[str],
               top1_required: bool) -> None:
    for label, dtype in HALF.items():
        net = caffe2torch.build(prototxt, weights, device=device, dtype=dtype)
        with torch.no_grad():
            found = net(x.to(device, dtype), outputs=outputs)
        last = outputs[-1]
        agree = float((found[last].float().argmax(1).cpu() == expected[last].argmax(1))
                      .float().mean())
        report.add(f"{name} {label}: top-1 agreement with fp32 over {len(x)} photographs",
                   agree, agree == 1.0 if top1_required else None,
                   "" if top1_required else "random weights: near ties")
        for blob in outputs:
            report.add(f"{name} {label}: max relative error of '{blob}'",
                       rel_error(found[blob].float(), expected[blob]))
        del net


def hand_written_vgg16(net) -> nn.Sequential:
    """torch's VGG-16 layout, written out, with the converted net's weights copied in."""
    layers: list[nn.Module] = []
    channels = 3
    for width, repeats in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
        for _ in range(repeats):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
            channels = width
        layers.append(nn.MaxPool2d(2, 2))
    layers += [nn.Flatten(), nn.Linear(512 * 7 * 7, 4096), nn.ReLU(inplace=True),
               nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Linear(4096, 2622),
               nn.Softmax(dim=1)]
    model = nn.Sequential(*layers)
    ours = [m for m in net.modules() if hasattr(m, "weight") and m.weight is not None]
    theirs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        for source, target in zip(ours, theirs, strict=True):
            target.weight.copy_(source.weight.reshape(target.weight.shape))
            target.bias.copy_(source.bias)
    return model.eval()


def images_per_second(run, x: torch.Tensor, iterations: int = 10) -> float:
    with torch.no_grad():
        for _ in range(3):
            run(x)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(iterations):
            run(x)
        torch.cuda.synchronize()
    return iterations * x.shape[0] / (time.perf_counter() - start)


def check_throughput(report: Report, weights: Path, x: torch.Tensor, device: str) -> None:
    batch = x.repeat((64 + len(x) - 1) // len(x), 1, 1, 1)[:64]
    for label, dtype, tf32 in (("fp32", torch.float32, False), ("fp32+TF32", torch.float32, True),
                               ("fp16", torch.float16, False), ("bf16", torch.bfloat16, False)):
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        net = caffe2torch.build(VGG_FACE, weights, device=device, dtype=dtype)
        plain = hand_written_vgg16(net).to(device, dtype)
        y = batch.to(device, dtype)
        with torch.no_grad():
            same = rel_error(plain(y).float(), net(y).float())
        ours, theirs = images_per_second(net, y), images_per_second(plain, y)
        report.add(f"VGG-Face {label} batch 64: converted img/s", ours, None,
                   f"hand-written VGG-16 {theirs:.0f} img/s, ratio {ours / theirs:.2f}, "
                   f"outputs differ by {same:.2g}")
        del net, plain
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def check_extraction(report: Report, weights: Path, folder: Path, device: str) -> None:
    from bench_extract import bench
    prep = Preprocessing(size=(224, 224), mean=[104.0, 117.0, 123.0])
    for dtype in ("float32", "bfloat16"):
        net = caffe2torch.build(VGG_FACE, weights, device=device, dtype=dtype)
        rates = bench(net, folder, prep, ["fc7"], 64, min(16, os.cpu_count() or 1), 1)
        forward, loader, extract = (rates[k][0] for k in ("forward", "loader", "extract"))
        report.add(f"extract VGG-Face fc7 {dtype} batch 64: img/s", extract, None,
                   f"forward alone {forward:.0f}, loader alone {loader:.0f}, "
                   f"extract / forward {extract / forward:.2f}")
        del net


def check_torchrun(report: Report, weights: Path, folder: Path) -> None:
    from caffe2torch.research import read_features
    with tempfile.TemporaryDirectory() as scratch:
        outputs = {n: Path(scratch) / f"{n}.npz" for n in ("one", "two")}
        base = [str(VGG_FACE), "-w", str(weights), "--images", str(folder), "--blobs", "fc7",
                "--size", "224x224", "--mean", "104,117,123", "--batch-size", "64",
                "--device", "cuda", "--no-progress"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        commands = {
            "one": [sys.executable, "-m", "caffe2torch", "extract", *base, "-o",
                    str(outputs["one"])],
            "two": [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                    "--master-port", str(port), "-m", "caffe2torch", "extract", *base, "-o",
                    str(outputs["two"])]}
        seconds = {}
        for name, command in commands.items():
            start = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True,
                                  timeout=600, check=False)
            seconds[name] = time.perf_counter() - start
            if done.returncode != 0:
                report.add(f"extract with {name} process(es)", "failed", False,
                           done.stderr[-2000:])
                return
        one, two = (read_features(outputs[n]) for n in ("one", "two"))
        report.add("torchrun 2 GPUs: same files in the same order", one.files == two.files,
                   one.files == two.files)
        error = rel_error(torch.from_numpy(two.blobs["fc7"]), torch.from_numpy(one.blobs["fc7"]))
        report.add("torchrun 2 GPUs vs 1: fc7 max relative error", error,
                   error <= FP32_TOLERANCE,
                   f"{len(one)} photographs, {seconds['one']:.1f} s on one GPU, "
                   f"{seconds['two']:.1f} s on two (each including start-up)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--vgg-face-weights", type=Path,
                        help="the real VGG_FACE.caffemodel (default: random weights)")
    parser.add_argument("--photos", type=int, default=16,
                        help="photographs for the precision checks (default 16)")
    parser.add_argument("--skip-torchrun", action="store_true", help="skip the 2-GPU check")
    parser.add_argument("--json", type=Path, help="also write the report as JSON")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run it on a machine with an NVIDIA GPU",
              file=sys.stderr)
        return 2
    device = "cuda:0"
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    started = time.perf_counter()
    report = Report()
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}", flush=True)
    folder, x = photographs(args.photos)
    weights, real = vgg_face_weights(args.vgg_face_weights)
    nsfw_proto = OPEN_NSFW / "deploy.prototxt"
    nsfw_weights = OPEN_NSFW / "resnet_50_1by2_nsfw.caffemodel"
    expected = check_fp32(report, "open_nsfw", nsfw_proto, nsfw_weights, x, device)
    check_half(report, "open_nsfw", nsfw_proto, nsfw_weights, x, device, expected,
               ["fc_nsfw", "prob"], True)
    expected = check_fp32(report, "VGG-Face", VGG_FACE, weights, x[:4], device)
    check_half(report, "VGG-Face", VGG_FACE, weights, x[:4], device, expected, ["fc7", "prob"],
               real)
    del expected
    check_throughput(report, weights, x, device)
    check_extraction(report, weights, folder, device)
    if torch.cuda.device_count() >= 2 and not args.skip_torchrun:
        check_torchrun(report, weights, folder)
    else:
        report.add("torchrun 2 GPUs", "skipped", None,
                   f"{torch.cuda.device_count()} GPU(s)" if not args.skip_torchrun else "")
    print(f"{'passed' if report.passed else 'FAILED'} in {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"passed": report.passed, "rows": report.rows},
                                        indent=1, default=str))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
