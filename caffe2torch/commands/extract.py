r"""Extract blobs (features) for every image in a folder, batched, with a progress bar.

Results are checkpointed to OUT.partial/ as the run goes; after Ctrl-C (or a crash) run the
same command again and it continues with the images not yet done. The output holds `files`
(paths relative to --images) and one (N, ...) array per blob in that order; read it with
caffe2torch.research.read_features, numpy.load (.npz) or safetensors (.safetensors; the
file list is in the metadata).

examples:
  caffe2torch extract deploy.prototxt -w net.caffemodel --images photos/ --blobs fc7 -o feats.npz
  caffe2torch extract --zoo vgg_face -w VGG_FACE.caffemodel --images faces/ \
      --blobs fc7,pool5 -o feats.safetensors --batch-size 64 --workers 4
"""
from __future__ import annotations

import argparse
import sys

from caffe2torch.commands import add_net_arguments
from caffe2torch.commands.build import resolve_net
from caffe2torch.research._options import (
    add_optimize_argument,
    add_preprocess_arguments,
    add_zoo_argument,
    build_for_images,
)
from caffe2torch.research.extract import ExtractInterrupted, extract_features

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
    parser.add_argument("--workers", type=int, default=2,
                        help="threads reading and preprocessing images (2; 0: none)")
    parser.add_argument("--checkpoint-every", type=int, default=10, metavar="N",
                        help="save a checkpoint shard every N batches (10)")
    parser.add_argument("--restart", action="store_true",
                        help="discard an earlier interrupted run instead of resuming it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_optimize_argument(parser)
    add_preprocess_arguments(parser)


def run(args: argparse.Namespace) -> int:
    blobs = [b for value in args.blobs for b in value.split(",") if b]
    net, prep = build_for_images(args, resolve_net(args))
    try:
        result = extract_features(
            net, args.images, blobs, args.output, preprocessing=prep,
            batch_size=args.batch_size, workers=args.workers,
            checkpoint_every=args.checkpoint_every, resume=not args.restart,
            progress=not args.no_progress, optimize=args.optimize)
    except ExtractInterrupted as stop:
        done = stop.result
        print(f"caffe2torch: interrupted; {done.done} of {done.total} image(s) saved in "
              f"{done.partial}; run the same command again to continue", file=sys.stderr)
        return 130
    for name, error in result.failed:
        print(f"warning: skipped {name}: {error}", file=sys.stderr)
    print(f"wrote {result.output}: {result.done - len(result.failed)} image(s), blobs {blobs} "
          f"({result.processed} read in this run, {result.resumed} in an earlier one, "
          f"{len(result.failed)} unreadable)", file=sys.stderr)
    return 0
