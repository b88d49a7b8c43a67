"""Fuzz the caffemodel reader: mutate generated files for N seconds (default 60).

Usage: python bench/fuzz_caffemodel.py [SECONDS] [--seed S]

Every input must either parse or raise CaffemodelError; any other exception is a failure
(printed with the seed and iteration to replay it) and the exit status is 1.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from collections import Counter

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from caffe2torch.errors import CaffemodelError  # noqa: E402
from caffe2torch.io.caffemodel import (  # noqa: E402
    parse_caffemodel,
    read_caffemodel,
    write_caffemodel,
)

TYPES = ["Convolution", "InnerProduct", "ReLU", "Pooling", "Eltwise"]
LEN_TAGS = (0x0A, 0x12, 0x2A, 0x32, 0x3A, 0x42, 0x62)  # one-byte tags of length-delimited fields


def make_corpus(rng: np.random.Generator, folder: str, count: int = 12) -> list[bytes]:
    """Small valid files: V2 and V1, float/double/half, varied shapes."""
    corpus = []
    for i in range(count):
        fmt = "V1" if i % 3 == 0 else "V2"
        dtype = ("float", "double", "half")[i % 3 if fmt == "V2" else 0]
        layers = []
        for j in range(int(rng.integers(1, 5))):
            shapes = [tuple(rng.integers(1, 4, rng.integers(1, 5))) for _ in range(rng.integers(3))]
            layers.append((f"l{j}", str(rng.choice(TYPES)),
                           [rng.standard_normal(s).astype(np.float32) for s in shapes]))
        path = os.path.join(folder, f"seed{i}.caffemodel")
        write_caffemodel(path, layers, name=f"net{i}", format=fmt, dtype=dtype)
        with open(path, "rb") as handle:
            corpus.append(handle.read())
    return corpus


def random_varint(rng: np.random.Generator) -> bytes:
    value = int(rng.choice([0, 1, 127, 128, 2**31, 2**32, 2**62, 2**64 - 1,
                            int(rng.integers(0, 2**20))]))
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def corrupt_length(data: bytearray, rng: np.random.Generator) -> None:
    """Replace the length varint after a length-delimited tag with a random one."""
    spots = [i for i, b in enumerate(data[:-1]) if b in LEN_TAGS]
    if not spots:
        return
    at = int(rng.choice(spots)) + 1
    end = at
    while end < len(data) and data[end] & 0x80:
        end += 1
    data[at:end + 1] = random_varint(rng)


def mutate(data: bytes, corpus: list[bytes], rng: np.random.Generator) -> tuple[bytes, str]:
    out = bytearray(data)
    kind = str(rng.choice(["flip", "bytes", "truncate", "length", "insert", "delete", "splice"]))
    if not out and kind in ("flip", "bytes", "delete"):
        kind = "insert"
    if kind == "flip":
        for _ in range(int(rng.integers(1, 4))):
            out[int(rng.integers(len(out)))] ^= 1 << int(rng.integers(8))
    elif kind == "bytes":
        for _ in range(int(rng.integers(1, 8))):
            out[int(rng.integers(len(out)))] = int(rng.integers(256))
    elif kind == "truncate":
        del out[int(rng.integers(len(out) + 1)):]
    elif kind == "length":
        corrupt_length(out, rng)
    elif kind == "insert":
        at = int(rng.integers(len(out) + 1))
        out[at:at] = rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8).tobytes()
    elif kind == "delete":
        at = int(rng.integers(len(out)))
        del out[at:at + int(rng.integers(1, 16))]
    else:
        other = corpus[int(rng.integers(len(corpus)))]
        cut_a, cut_b = int(rng.integers(len(out) + 1)), int(rng.integers(len(other) + 1))
        out = out[:cut_a] + other[cut_b:]
    return bytes(out), kind


def touch(model) -> None:  # noqa: ANN001
    for layer in model:
        for blob in layer.blobs:
            if blob.data.shape != blob.shape:
                raise AssertionError(f"{layer.name}: data {blob.data.shape} != {blob.shape}")
            blob.data.tobytes()


def check(data: bytes, via_file: bool, folder: str) -> str:
    if via_file:
        path = os.path.join(folder, "case.caffemodel")
        with open(path, "wb") as handle:
            handle.write(data)
        model = read_caffemodel(path)
    else:
        model = parse_caffemodel(data, source="<fuzz>")
    touch(model)
    return "ok"


def run(seconds: float, seed: int) -> int:
    rng = np.random.default_rng(seed)
    counts: Counter[str] = Counter()
    failures = 0
    with tempfile.TemporaryDirectory() as folder:
        corpus = make_corpus(rng, folder)
        deadline = time.monotonic() + seconds
        iteration = 0
        while time.monotonic() < deadline:
            iteration += 1
            data = corpus[int(rng.integers(len(corpus)))]
            for _ in range(int(rng.integers(1, 4))):
                data, kind = mutate(data, corpus, rng)
            counts[kind] += 1
            try:
                counts[check(data, iteration % 50 == 0, folder)] += 1
            except CaffemodelError:
                counts["CaffemodelError"] += 1
            except Exception:  # noqa: BLE001 - anything else is the bug we hunt
                failures += 1
                sys.stderr.write(f"FAILURE seed={seed} iteration={iteration} "
                                 f"input={data.hex()}\n{traceback.format_exc()}\n")
    kinds = {k: v for k, v in counts.items() if k not in ("ok", "CaffemodelError")}
    sys.stdout.write(f"{iteration} inputs in {seconds:.0f} s: ok={counts['ok']} "
                     f"CaffemodelError={counts['CaffemodelError']} other={failures}\n"
                     f"mutations: {kinds}\n")
    return 1 if failures else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seconds", nargs="?", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.exit(run(args.seconds, args.seed))


if __name__ == "__main__":
    main()
