"""What the research commands do with their shared options (declared in
:mod:`caffe2torch.options`): the zoo entry, the preprocessing, the net built for images."""
from __future__ import annotations

import argparse
import logging

from caffe2torch.api import build, load_graph
from caffe2torch.build import CaffeNet
from caffe2torch.devices import resolve_placement
from caffe2torch.options import parse_input_shapes, parse_variants
from caffe2torch.preprocess import Preprocessing, default_preprocessing, parse_mean, parse_size

log = logging.getLogger("caffe2torch")


def optimized_for(args: argparse.Namespace, net: CaffeNet, keep=()) -> CaffeNet:
    """The net to run for ``args``: optimised (keeping the blobs ``keep`` names readable with
    ``outputs=``) unless ``--no-optimize`` was given. ``net`` is consumed: its modules move
    into the optimised model, so run only the returned one."""
    if not getattr(args, "optimize", True):
        return net
    from caffe2torch.passes import optimize
    return optimize(net, keep=keep, copy_modules=False)


def zoo_entry(args: argparse.Namespace):
    if not getattr(args, "zoo", None):
        return None
    from caffe2torch.zoo import get_entry
    return get_entry(args.zoo)


def preprocessing_from_args(args: argparse.Namespace, graph) -> Preprocessing:
    """The net's default preprocessing with the command line's overrides applied."""
    prep = default_preprocessing(graph, zoo_entry(args), load_mean_file=not args.mean)
    crop = parse_size(args.crop) if args.crop else None
    if isinstance(crop, int):
        crop = (crop, crop)
    prep = prep.replace(mean=parse_mean(args.mean) if args.mean else None, scale=args.scale,
                        raw_scale=args.raw_scale,
                        size=parse_size(args.size) if args.size else None, crop=crop,
                        channel_order="RGB" if args.rgb else None)
    if prep.source == "defaults" and not args.mean:
        log.warning("%s records no preprocessing (no zoo manifest, no Data layer); using %s; "
                    "%s", graph.definition.source, prep.describe(), _preprocessing_hint(graph))
    else:
        log.info("preprocessing: %s", prep.describe())
    return prep


def build_for_images(args: argparse.Namespace, net_path) -> tuple[CaffeNet, Preprocessing]:
    """Build the net (with ``args.weights``) for images preprocessed as the options say.

    The input is set to the preprocessed size when that is fixed (a crop or an exact resize),
    so shape inference checks that the net accepts it. ``--device`` / ``--dtype`` are checked
    first, before any file is read.
    """
    device, dtype = getattr(args, "device", None), getattr(args, "dtype", None)
    resolve_placement(device, dtype)
    shapes = parse_input_shapes(args.input_shape)
    variants = parse_variants(args.variant)
    graph = load_graph(net_path, shapes, phase=args.phase, variants=variants)
    prep = preprocessing_from_args(args, graph)
    if len(graph.inputs) == 1 and not shapes:
        declared = graph.blobs[graph.inputs[0]].shape
        hw = prep.crop or (prep.size if isinstance(prep.size, tuple) else None)
        if declared is not None and len(declared) == 4 and hw is not None:
            shapes = {graph.blobs[graph.inputs[0]].name: (1, declared[1], *hw)}
    net = build(net_path, args.weights, input_shapes=shapes or None, phase=args.phase,
                device=device, dtype=dtype, variants=variants)
    return net, prep


def _preprocessing_hint(graph) -> str:
    """What to pass: a zoo entry's options when the net has its name (a copy of the zoo's
    prototxt, perhaps edited: ``--zoo`` would use the zoo's own file, so the options are named)."""
    from caffe2torch.zoo import entries_named
    for entry in entries_named(graph.name):
        if entry.preprocessing:
            options = Preprocessing.from_manifest(entry).as_options()
            return (f"the net is named '{graph.name}' like model zoo entry '{entry.id}'; if it "
                    f"was trained as that one, pass its preprocessing: {options}")
    return "pass --mean (and --scale) if the net was trained with them"
