"""Weight loading against disk speed: VGG-Face's 580 MB of weights in the original V1 layout.

Usage: python bench/bench_load.py [--repeat N] [--no-memory] [--check]

The caffemodel (random values, VGG-Face's exact blob shapes, V1 layers with legacy 4-D dims like
the original VGG_FACE.caffemodel) is written once to bench/.cache/. Then, in this process and with
the file in the page cache, each path runs N times (interleaved; best and median printed):

  (a) read       np.fromfile of the whole file: the baseline, "disk speed" from the page cache
      floor      the same bytes read into torch.empty memory (no transparent huge pages)
  (b) protobuf   caffe_pb2.NetParameter.ParseFromString + np.array(blob.data) per blob, what
                 other converters do
  (c) build      caffe2torch.build(prototxt, weights=path): the converted model, weights bound
  diagnostics    read_caffemodel alone (zero-copy views) and build without weights (modules)

Peak memory: each path runs once more in its own interpreter, which imports numpy, torch and
caffe2torch first; "extra" is the peak RSS (VmHWM, reset after the imports) minus the RSS then,
so it counts everything the path touches, file pages it maps included (RssFile), and the result
it returns. Targets: (c) <= 1.5x the time of (a), and (c)'s extra peak <= 1.25x the file size.
``--check`` exits 1 when a target is missed.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import caffe2torch
from caffe2torch.proto import caffe_pb2

PROTOTXT = ROOT / "model_zoo" / "vgg_face" / "deploy.prototxt"
CACHE = ROOT / "bench" / ".cache"
WEIGHTS = CACHE / "vgg_face_random_v1.caffemodel"
TIME_TARGET, MEMORY_TARGET = 1.5, 1.25


def read_file(path: Path):
    return np.fromfile(path, dtype=np.uint8)


def read_into_tensor(path: Path):
    """The same read into memory from torch's allocator, which (unlike numpy's) does not ask for
    transparent huge pages: where THP defrag is "madvise", np.fromfile's page faults may compact
    memory synchronously, so this is the steadier floor."""
    import torch

    out = torch.empty(path.stat().st_size, dtype=torch.uint8)
    with open(path, "rb", buffering=0) as handle:
        view, done = memoryview(out.numpy()), 0
        while done < len(view):
            done += handle.readinto(view[done:])
    return out


def protobuf_arrays(path: Path):
    """What peers do: parse the whole message, then copy each repeated float field out."""
    net = caffe_pb2.NetParameter()
    with open(path, "rb") as handle:
        net.ParseFromString(handle.read())
    arrays = {}
    for layer in list(net.layer) + list(net.layers):
        arrays[layer.name] = [np.array(blob.data, dtype=np.float32) for blob in layer.blobs]
    return arrays


def build(path: Path):
    return caffe2torch.build(PROTOTXT, weights=path)


def read_views(path: Path):
    return caffe2torch.read_caffemodel(path)


def build_without_weights(path: Path):
    return caffe2torch.build(PROTOTXT)


PATHS: dict[str, tuple[str, Callable]] = {
    "read": ("(a) np.fromfile, the baseline", read_file),
    "floor": ("    readinto torch.empty (no huge pages)", read_into_tensor),
    "protobuf": ("(b) protobuf parse + np.array per blob", protobuf_arrays),
    "build": ("(c) caffe2torch.build(prototxt, weights)", build),
    "views": ("    read_caffemodel alone (views)", read_views),
    "modules": ("    build without weights (modules)", build_without_weights),
}
TIMED_ONCE = {"protobuf"}  # slow; one run is enough to place it


def ensure_weights() -> Path:
    if not WEIGHTS.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        print(f"writing {WEIGHTS.relative_to(ROOT)} (once) ...", file=sys.stderr)
        caffe2torch.write_random_caffemodel(PROTOTXT, WEIGHTS, seed=0, format="V1")
    return WEIGHTS


# ----------------------------------------------------------------------------- time


def time_paths(path: Path, repeat: int) -> dict[str, list[float]]:
    read_file(path)  # the page cache holds the file from here on
    times: dict[str, list[float]] = {name: [] for name in PATHS}
    for i in range(repeat):
        for name, (_, run) in PATHS.items():
            if name in TIMED_ONCE and i:
                continue
            gc.collect()
            start = time.perf_counter()
            result = run(path)
            times[name].append(time.perf_counter() - start)
            del result
    return times


# ----------------------------------------------------------------------------- memory


def _status(field: str) -> int:
    """A /proc/self/status field in bytes (0 where /proc is missing)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


class _Sampler(threading.Thread):
    """Samples RssAnon and RssFile every millisecond: a breakdown of the peak (approximate)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peaks = {"RssAnon": 0, "RssFile": 0}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for field in self.peaks:
                self.peaks[field] = max(self.peaks[field], _status(field))
            time.sleep(0.001)


def measure_child(name: str, path: Path) -> None:
    """In a fresh interpreter: run one path once and print its memory figures as JSON."""
    gc.collect()
    base = {"rss": _status("VmRSS"), "RssAnon": _status("RssAnon"),
            "RssFile": _status("RssFile")}
    exact = _reset_peak()
    if not exact:
        base["rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    sampler = _Sampler()
    sampler.start()
    result = PATHS[name][1](path)
    peak = _status("VmHWM") if exact else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    sampler.done.set()
    sampler.join()
    del result
    print(json.dumps({"extra": peak - base["rss"], "exact": exact, "base": base["rss"],
                      "anon": sampler.peaks["RssAnon"] - base["RssAnon"],
                      "file": sampler.peaks["RssFile"] - base["RssFile"]}))


def measure_memory(path: Path) -> dict[str, dict]:
    figures = {}
    for name in PATHS:
        done = subprocess.run([sys.executable, __file__, "--child", name, str(path)],
                              capture_output=True, text=True, check=True)
        figures[name] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


# ----------------------------------------------------------------------------- report


def report(path: Path, times: dict[str, list[float]], memory: dict[str, dict] | None) -> bool:
    import torch

    size = path.stat().st_size
    base = min(times["read"])
    print(f"file: {path.relative_to(ROOT)}, {size / 1e6:.1f} MB (V1, VGG-Face blob shapes); "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs; page cache warm")
    print(f"{'path':<44} {'best s':>8} {'median s':>9} {'x (a)':>7} {'GB/s':>6}"
          + (f" {'extra MB':>9} {'x file':>7} {'anon MB':>8} {'file MB':>8}" if memory else ""))
    for name, (label, _) in PATHS.items():
        best = min(times[name])
        row = (f"{label:<44} {best:8.3f} {statistics.median(times[name]):9.3f} "
               f"{best / base:7.2f} {size / best / 1e9:6.2f}")
        if memory:
            m = memory[name]
            row += (f" {m['extra'] / 1e6:9.0f} {m['extra'] / size:7.2f} {m['anon'] / 1e6:8.0f} "
                    f"{m['file'] / 1e6:8.0f}")
        print(row)
    time_ratio = min(times["build"]) / base
    ok = time_ratio <= TIME_TARGET
    print(f"target (c) time <= {TIME_TARGET}x (a): {time_ratio:.2f}x "
          f"{'met' if ok else 'MISSED'} ({min(times['build']) / min(times['floor']):.2f}x the "
          f"readinto floor)")
    if memory:
        memory_ratio = memory["build"]["extra"] / size
        met = memory_ratio <= MEMORY_TARGET
        note = "" if memory["build"]["exact"] else " (ru_maxrss: includes the import peak)"
        print(f"target (c) extra peak <= {MEMORY_TARGET}x file: {memory_ratio:.2f}x "
              f"{'met' if met else 'MISSED'}{note}")
        ok = ok and met
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per path (best of N)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--child", nargs=2, metavar=("PATH_NAME", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        measure_child(args.child[0], Path(args.child[1]))
        return 0
    path = ensure_weights()
    times = time_paths(path, args.repeat)
    memory = None if args.no_memory else measure_memory(path)
    ok = report(path, times, memory)
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
