#!/usr/bin/env python3
"""Regenerate caffe2torch/proto/caffe_pb2.py from proto/caffe.proto.

Dev-time only: it needs grpcio-tools (which bundles protoc); the package at
run time needs only the protobuf runtime. The generated module is committed.

    python tools/gen_proto.py           # rewrite caffe2torch/proto/caffe_pb2.py
    python tools/gen_proto.py --check   # exit 1 if the committed file is stale

The .proto keeps ``package caffe;`` (messages are ``caffe.NetParameter`` etc.), but
protoc sees proto/caffe.proto under the virtual path caffe2torch/proto/caffe.proto
(``--proto_path=caffe2torch/proto=<repo>/proto``). That makes the generated code
register its classes under the module name ``caffe2torch.proto.caffe_pb2`` (so
messages pickle and repr correctly) and names the descriptor file
``caffe2torch/proto/caffe.proto``, which cannot clash with another library's
``caffe.proto`` file entry in protobuf's default descriptor pool.
The output depends on the protoc version bundled with grpcio-tools: a --check
failure right after upgrading grpcio-tools means "regenerate and commit".
"""

from __future__ import annotations

import argparse
import difflib
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROTO_DIR = REPO / "proto"
PROTO_FILE = PROTO_DIR / "caffe.proto"
VIRTUAL_DIR = "caffe2torch/proto"  # where protoc pretends caffe.proto lives
TARGET = REPO / "caffe2torch" / "proto" / "caffe_pb2.py"


def protoc_version() -> str:
    """The version line of the protoc bundled with grpcio-tools."""
    import grpc_tools

    try:
        from importlib.metadata import version

        tools = version("grpcio-tools")
    except Exception:  # pragma: no cover - metadata missing in odd installs
        tools = "?"
    return f"grpcio-tools {tools} ({Path(grpc_tools.__file__).parent})"


def generate(out_dir: Path) -> Path:
    """Compile PROTO_FILE into out_dir; return the path of caffe_pb2.py."""
    from grpc_tools import protoc

    args = [
        "grpc_tools.protoc",
        f"--proto_path={VIRTUAL_DIR}={PROTO_DIR}",
        f"--python_out={out_dir}",
        f"{VIRTUAL_DIR}/{PROTO_FILE.name}",
    ]
    status = protoc.main(args)
    if status != 0:
        raise SystemExit(f"protoc failed with status {status} on {PROTO_FILE}")
    produced = out_dir / VIRTUAL_DIR / "caffe_pb2.py"
    if not produced.is_file():
        raise SystemExit(f"protoc did not write {produced}")
    return produced


def check() -> int:
    """Regenerate into a temp dir and compare with the committed file."""
    with tempfile.TemporaryDirectory(prefix="caffe2torch-proto-") as tmp:
        fresh = generate(Path(tmp)).read_bytes()
    if not TARGET.is_file():
        print(f"{TARGET.relative_to(REPO)} is missing; run tools/gen_proto.py", file=sys.stderr)
        return 1
    committed = TARGET.read_bytes()
    if fresh == committed:
        print(f"{TARGET.relative_to(REPO)} is up to date")
        return 0
    print(
        f"{TARGET.relative_to(REPO)} differs from what {protoc_version()} generates "
        f"from {PROTO_FILE.relative_to(REPO)}; run tools/gen_proto.py and commit the result.",
        file=sys.stderr,
    )
    diff = difflib.unified_diff(
        committed.decode("utf-8", "replace").splitlines(keepends=True),
        fresh.decode("utf-8", "replace").splitlines(keepends=True),
        fromfile="committed",
        tofile="regenerated",
        n=1,
    )
    shown = 0
    for line in diff:
        sys.stderr.write(line if len(line) <= 200 else line[:200] + "...\n")
        shown += 1
        if shown >= 40:
            sys.stderr.write("... (diff truncated)\n")
            break
    return 1


def write() -> int:
    with tempfile.TemporaryDirectory(prefix="caffe2torch-proto-") as tmp:
        fresh = generate(Path(tmp)).read_bytes()
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_bytes(fresh)
    print(f"wrote {TARGET.relative_to(REPO)} ({len(fresh)} bytes) with {protoc_version()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if the committed caffe_pb2.py is out of date",
    )
    args = parser.parse_args(argv)
    return check() if args.check else write()


if __name__ == "__main__":
    sys.exit(main())
