"""Fuzz the prototxt path: mutate real prototxts and build each mutant.

Usage: python bench/fuzz_prototxt.py [COUNT] [--seed S] [--corpus DIR] [--memory MB]
                                     [--timeout S] [--save DIR]
       python bench/fuzz_prototxt.py --replay CASE.prototxt [...]

Each mutant (numbers set to extremes, lines deleted / duplicated / swapped, layer types, bottoms
and tops changed, truncation, unknown blocks and fields) must end in a build or a
Caffe2TorchError, and ``load_graph(check=False)`` on it must return or raise a Caffe2TorchError.
Anything else is an escape: another exception, a case running past ``--timeout`` (a hang), a
worker killed (a crash), or an allocation failure (each case runs in a worker whose address space
is limited to ``--memory`` MB above what it uses idle, so a size the code does not check before
allocating shows up as torch's or Python's allocation error, not as a machine out of memory).
Escapes are printed with the seed, case number and mutation, saved under ``--save`` for
``--replay``; the exit status is 1 when there is one.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus" / "prototxt"
INT_EXTREMES = ("0", "-1", "1", "2", "2147483647", "-2147483648", "65536", "4294967295",
                "100000", "-2")
FLOAT_EXTREMES = ("0", "-1", "1e38", "-1e38", "nan", "inf", "-inf", "1e-38", "0.5", "1e10")
#: Fields whose values size tensors: mutated more often, to hunt unchecked allocations.
SIZE_FIELDS = ("num_output", "dim", "input_dim", "kernel_size", "kernel_h", "kernel_w", "pad",
               "stride", "input_dim", "num", "channels", "height", "width", "tiles", "axis",
               "group", "dilation", "slice_point", "pooled_h", "pooled_w", "num_axes",
               "local_size", "min_size", "max_size", "new_height", "new_width", "crop_size",
               "offset", "scale_factor", "batch_size", "upsample_h", "upsample_w", "order")
TYPES = ("Convolution", "InnerProduct", "Pooling", "ReLU", "Softmax", "Concat", "Eltwise",
         "Reshape", "Slice", "Tile", "Embed", "Scale", "BatchNorm", "Deconvolution", "Crop",
         "Flatten", "Split", "Input", "DummyData", "LRN", "Dropout", "PriorBox", "Permute",
         "Normalize", "DetectionOutput", "Python", "Interp", "Silence", "Reduction", "Bias",
         "ArgMax", "Convolutoin", "LSTM", "RNN", "Data", "SoftmaxWithLoss", "Accuracy", "")
V1_TYPES = ("CONVOLUTION", "INNER_PRODUCT", "POOLING", "RELU", "SOFTMAX", "CONCAT", "ELTWISE",
            "SLICE", "SPLIT", "LRN", "DROPOUT", "FLATTEN", "SIGMOID", "TANH", "POWER", "DATA",
            "ACCURACY", "SOFTMAX_LOSS", "DECONVOLUTION", "ARGMAX", "SILENCE", "NONE", "BNLL")
BLOCKS = ('fuzz_param { value: 3 }', 'convolution_param { fuzz_field: 1 }',
          'include { phase: TRAIN }', 'exclude { phase: TEST }', 'layer { name: "fz" }',
          'unknown_field: "x"', 'param { lr_mult: 1 }', '}', '{', 'bottom: "fuzz"',
          'top: "fuzz"', 'input: "extra"', 'input_dim: 1', 'shape { dim: 1 }')
_NUMBER = re.compile(r"(?<=:)(\s*)(-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")
_SIZE_NUMBER = re.compile(r"\b(" + "|".join(SIZE_FIELDS) + r")(\s*:\s*)(-?[\d.eE+-]+)")
_TYPE = re.compile(r'(\btype\s*:\s*)("[^"]*"|[A-Z_0-9]+)')
_BLOB = re.compile(r'(\b(?:bottom|top)\s*:\s*)"([^"]*)"')


# --- mutations ---------------------------------------------------------------------------------

def mutate(text: str, rng: np.random.Generator) -> tuple[str, str]:
    """One mutation of ``text``, and what it did."""
    kind = str(rng.choice(["size", "number", "delete", "duplicate", "swap", "type", "blob",
                           "truncate", "block", "top_twice"],
                          p=[.18, .12, .12, .1, .08, .1, .1, .06, .08, .06]))
    lines = text.splitlines(keepends=True)
    if not lines:
        return text + str(rng.choice(BLOCKS)), "block"
    if kind in ("size", "number"):
        pattern = _SIZE_NUMBER if kind == "size" else _NUMBER
        spots = list(pattern.finditer(text))
        if spots:
            spot = spots[int(rng.integers(len(spots)))]
            original = spot.group(3 if kind == "size" else 2)
            integer = re.fullmatch(r"-?\d+", original) is not None
            value = str(rng.choice(INT_EXTREMES if integer and rng.random() < 0.9
                                   else FLOAT_EXTREMES))
            start, end = spot.span(3 if kind == "size" else 2)
            return text[:start] + value + text[end:], f"{kind}:{spot.group(0).strip()}->{value}"
        kind = "delete"
    if kind == "type":
        spots = list(_TYPE.finditer(text))
        if spots:
            spot = spots[int(rng.integers(len(spots)))]
            new = str(rng.choice(TYPES))
            quoted = spot.group(2).startswith('"')
            value = f'"{new}"' if quoted or rng.random() < 0.1 else str(rng.choice(V1_TYPES))
            start, end = spot.span(2)
            return text[:start] + value + text[end:], f"type:{spot.group(2)}->{value}"
        kind = "delete"
    if kind in ("blob", "top_twice"):
        spots = list(_BLOB.finditer(text))
        names = sorted({m.group(2) for m in spots}) + ["nowhere"]
        if spots:
            spot = spots[int(rng.integers(len(spots)))]
            if kind == "top_twice":
                line_end = text.index("\n", spot.end()) if "\n" in text[spot.end():] else len(text)
                copy = " " + spot.group(0)
                return text[:line_end] + copy + text[line_end:], f"repeat:{spot.group(0)}"
            new = str(rng.choice(names))
            start, end = spot.span(2)
            return text[:start] + new + text[end:], f"blob:{spot.group(2)}->{new}"
        kind = "delete"
    at = int(rng.integers(len(lines)))
    if kind == "delete":
        return "".join(lines[:at] + lines[at + 1:]), f"delete line {at + 1}"
    if kind == "duplicate":
        return "".join(lines[:at + 1] + lines[at:]), f"duplicate line {at + 1}"
    if kind == "swap":
        other = min(len(lines) - 1, at + int(rng.integers(1, 4))) if rng.random() < 0.7 \
            else int(rng.integers(len(lines)))
        lines[at], lines[other] = lines[other], lines[at]
        return "".join(lines), f"swap lines {at + 1} {other + 1}"
    if kind == "truncate":
        cut = int(rng.integers(len(text) + 1))
        return text[:cut], f"truncate at {cut}"
    block = str(rng.choice(BLOCKS))
    return "".join(lines[:at] + [block + "\n"] + lines[at:]), f"insert '{block}' at line {at + 1}"


def make_case(texts: list[tuple[str, str]], rng: np.random.Generator) -> tuple[str, str, str]:
    name, text = texts[int(rng.integers(len(texts)))]
    kinds = []
    for _ in range(int(rng.choice([1, 1, 1, 1, 2, 3]))):
        text, kind = mutate(text, rng)
        kinds.append(kind)
    return name, text, "; ".join(kinds)


# --- the worker: one process, limited memory, cases from stdin ---------------------------------

def _limit_memory(megabytes: int) -> None:
    import resource
    with open("/proc/self/statm", encoding="ascii") as handle:
        mapped = int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = mapped + megabytes * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run_case(path: str) -> dict:
    """Build the case and load its graph unchecked; what happened, as a JSON-able dict."""
    import traceback

    import caffe2torch
    from caffe2torch.errors import Caffe2TorchError
    result = {}
    try:
        net = caffe2torch.build(path)
        result["build"] = f"ok ({sum(p.numel() for p in net.parameters()):,} parameters)"
        del net
    except Caffe2TorchError as err:
        result["build"] = f"{type(err).__name__}: {str(err).splitlines()[-1][:160]}"
    except BaseException as err:  # noqa: BLE001 - anything else is what we hunt
        result["escape"] = f"build: {type(err).__name__}: {err}"[:400]
        result["traceback"] = traceback.format_exc()[-3000:]
        return result
    try:
        caffe2torch.load_graph(path, check=False)
    except Caffe2TorchError:
        pass
    except BaseException as err:  # noqa: BLE001
        result["escape"] = f"load_graph(check=False): {type(err).__name__}: {err}"[:400]
        result["traceback"] = traceback.format_exc()[-3000:]
    return result


def worker(megabytes: int) -> None:
    import logging

    import torch

    import caffe2torch.layers  # noqa: F401  (imported before the limit is set)
    logging.disable(logging.CRITICAL)
    torch.set_num_threads(1)
    _limit_memory(megabytes)
    for line in sys.stdin:
        result = run_case(line.strip())
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


class Worker:
    """A worker subprocess; restarted after a hang or a crash."""

    def __init__(self, megabytes: int) -> None:
        self.megabytes = megabytes
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", "--memory", str(self.megabytes)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, env=env)

    def run(self, path: str, timeout: float) -> dict:
        if self.process is None or self.process.poll() is not None:
            self.start()
        assert self.process and self.process.stdin and self.process.stdout
        self.process.stdin.write(path + "\n")
        self.process.stdin.flush()
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            ready = selector.select(timeout)
        if not ready:
            self.stop()
            return {"escape": f"hang: no result within {timeout:.0f} s"}
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            self.process = None
            return {"escape": f"crash: the worker died (exit status {code})"}
        return json.loads(line)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


# --- the driver --------------------------------------------------------------------------------

def fuzz(count: int, seed: int, corpus: Path, megabytes: int, timeout: float,
         save: Path | None) -> int:
    texts = [(p.name, p.read_text(errors="replace")) for p in sorted(corpus.glob("*.prototxt"))]
    if not texts:
        sys.exit(f"no .prototxt files in {corpus}")
    rng = np.random.default_rng(seed)
    outcomes: Counter[str] = Counter()
    escapes = 0
    runner = Worker(megabytes)
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "case.prototxt")
        texts = _building(texts, runner, path, timeout)
        for case in range(count):
            name, text, kinds = make_case(texts, rng)
            Path(path).write_text(text)
            result = runner.run(path, timeout)
            if "escape" in result:
                escapes += 1
                outcomes["escape"] += 1
                sys.stderr.write(f"ESCAPE seed={seed} case={case} file={name} mutation={kinds}\n"
                                 f"  {result['escape']}\n{result.get('traceback', '')}\n")
                if save is not None:
                    save.mkdir(parents=True, exist_ok=True)
                    (save / f"escape_{seed}_{case}_{name}").write_text(text)
            else:
                outcomes[result["build"].split(":")[0].split(" (")[0]] += 1
    runner.stop()
    sys.stdout.write(f"{count} mutants of {len(texts)} files in {time.monotonic() - start:.0f} s "
                     f"(seed {seed}): {dict(outcomes.most_common())}\n")
    return 1 if escapes else 0


def _building(texts: list[tuple[str, str]], runner: Worker, path: str,
              timeout: float) -> list[tuple[str, str]]:
    """The files that build unmutated (a mutant of one that does not, a train_val net whose Data
    layers leave the input shape open, mostly stops at that)."""
    kept = []
    for name, text in texts:
        Path(path).write_text(text)
        if runner.run(path, timeout).get("build", "").startswith("ok"):
            kept.append((name, text))
    sys.stdout.write(f"{len(kept)} of {len(texts)} corpus files build unmutated; mutating those\n")
    return kept


def replay(paths: list[str], megabytes: int, timeout: float) -> int:
    runner = Worker(megabytes)
    escapes = 0
    for path in paths:
        result = runner.run(os.path.abspath(path), timeout)
        escapes += "escape" in result
        sys.stdout.write(f"{path}: {result.get('escape') or result['build']}\n"
                         f"{result.get('traceback', '')}")
    runner.stop()
    return 1 if escapes else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", nargs="?", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--memory", type=int, default=3072,
                        help="MB of address space a case may add (default 3072)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a case may take")
    parser.add_argument("--save", type=Path, help="folder for the escaping mutants")
    parser.add_argument("--replay", nargs="+", help="run these prototxts instead of mutants")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.memory)
    elif args.replay:
        sys.exit(replay(args.replay, args.memory, args.timeout))
    else:
        sys.exit(fuzz(args.count, args.seed, args.corpus, args.memory, args.timeout, args.save))


if __name__ == "__main__":
    main()
