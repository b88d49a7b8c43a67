r"""Extract blobs (features) for every image in a folder, batched, with a progress bar.

Results are checkpointed to OUT.partial/ as the run goes; after Ctrl-C (or a crash) run the
same command again and it continues with the images not yet done. The output holds `files`
(paths relative to --images) and one (N, ...) array per blob in that order; read it with
caffe2torch.research.read_features, numpy.load (.npz) or safetensors (.safetensors; the
file list is in the metadata).

Under torchrun the images are split across the processes (one GPU each with --device cuda):
each writes its own checkpoint shards into OUT.partial/ (which every machine must see), rank 0
writes OUT, in the same order and with the same contents as one process would; after a rank
dies, run the same command again and it finishes the job.

examples:
  caffe2torch extract deploy.prototxt -w net.caffemodel --images photos/ --blobs fc7 -o feats.npz
  caffe2torch extract --zoo vgg_face -w VGG_FACE.caffemodel --images faces/ \
      --blobs fc7,pool5 -o feats.safetensors --batch-size 64 --device cuda --dtype bfloat16
  torchrun --nproc-per-node 4 -m caffe2torch extract --zoo vgg_face -w VGG_FACE.caffemodel \
      --images faces/ --blobs fc7 -o feats.npz --device cuda
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from caffe2torch.commands.build import resolve_net
from caffe2torch.options import (
    add_device_arguments,
    add_net_arguments,
    add_optimize_argument,
    add_preprocess_arguments,
    add_zoo_argument,
)

NAME = "extract"
HELP = "extract features (any blobs) for a folder of images; resumable"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_net_arguments(parser, weights_required=True)
    add_zoo_argument(parser)
    parser.add_argument("--images", metavar="DIR", required=True,
                        help="folder of images (searched recursively)")
    parser.add_argument("--blobs", metavar="BLOB[,BLOB]", action="append", required=True,
                        help="blobs to save (comma-separated or repeated), e.g. fc7")
    parser.add_argument("-o", "--output", metavar="OUT", default="features.npz",
                        help="output file, .npz or .safetensors (default features.npz)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per batch (32)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="threads reading and preprocessing images, per process "
                             "(default: the CPU count, at most 8; 0: none)")
    parser.add_argument("--checkpoint-every", type=int, default=10, metavar="N",
                        help="save a checkpoint shard every N batches (10)")
    parser.add_argument("--restart", action="store_true",
                        help="discard an earlier interrupted run instead of resuming it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_device_arguments(parser)
    add_optimize_argument(parser)
    add_preprocess_arguments(parser)


def run(args: argparse.Namespace) -> int:
    # torchrun stops the other ranks with SIGTERM when one fails: they save their batches first
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        return _extract(args)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _extract(args: argparse.Namespace) -> int:
    from caffe2torch.research._options import build_for_images
    from caffe2torch.research.distributed import launched_from_env
    from caffe2torch.research.extract import ExtractInterrupted, extract_features

    blobs = [b for value in args.blobs for b in value.split(",") if b]
    with launched_from_env(args.device) as args.device:
        net, prep = build_for_images(args, resolve_net(args))
        try:
            result = extract_features(
                net, args.images, blobs, args.output, preprocessing=prep,
                batch_size=args.batch_size, workers=args.workers,
                checkpoint_every=args.checkpoint_every, resume=not args.restart,
                progress=not args.no_progress, optimize=args.optimize)
        except ExtractInterrupted as stop:
            done = stop.result
            rank = f" (rank {done.rank})" if done.world_size > 1 else ""
            print(f"caffe2torch: interrupted{rank}; {done.done} of {done.total} image(s) saved "
                  f"in {done.partial}; run the same command again to continue",
                  file=sys.stderr)
            return 130
    if result.rank != 0:
        return 0
    for name, error in result.failed:
        print(f"warning: skipped {name}: {error}", file=sys.stderr)
    ranks = f" by {result.world_size} processes" if result.world_size > 1 else ""
    print(f"wrote {result.output}: {result.total - len(result.failed)} image(s), blobs {blobs} "
          f"({result.total - result.resumed} read in this run{ranks}, {result.resumed} in an "
          f"earlier one, {len(result.failed)} unreadable)", file=sys.stderr)
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
