"""List the model zoo, show an entry's manifest, fetch its official weights.

examples:
  caffe2torch zoo list
  caffe2torch zoo info open_nsfw
  caffe2torch zoo info vgg16 --json
  caffe2torch zoo fetch open_nsfw -o weights/
  caffe2torch zoo fetch resnet50 --url https://example.org/ResNet-50-model.caffemodel
  caffe2torch build --zoo open_nsfw -w weights/resnet_50_1by2_nsfw.caffemodel
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from caffe2torch import zoo

NAME = "zoo"
HELP = "list the model zoo, show an entry, download an entry's official weights"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # -v also after the action (``zoo fetch ID -v``); SUPPRESS keeps ``zoo -v fetch ID`` working
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="show notes and a traceback on errors")
    actions = parser.add_subparsers(dest="zoo_action", metavar="ACTION", required=True)
    actions.add_parser("list", parents=[verbose],
                       help="one line per entry: id, input, parameters, weights")
    info = actions.add_parser("info", parents=[verbose], help="an entry's manifest, readably")
    info.add_argument("id", metavar="ID")
    info.add_argument("--json", action="store_true", help="print the manifest as JSON")
    fetch = actions.add_parser("fetch", parents=[verbose],
                               help="download the official weights and verify them")
    fetch.add_argument("id", metavar="ID")
    fetch.add_argument("-o", "--output-dir", metavar="DIR", default=".",
                       help="where to put the weights (default: the current folder)")
    fetch.add_argument("--url", help="download from URL instead of the manifest's")
    fetch.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if args.zoo_action == "list":
        print(format_list(zoo.list_entries()))
    elif args.zoo_action == "info":
        entry = zoo.get_entry(args.id)
        print(json.dumps(entry.manifest, indent=2) if args.json else format_info(entry))
    else:
        path = zoo.fetch_weights(args.id, args.output_dir, url=args.url,
                                 progress=not args.quiet)
        print(path)
    return 0


def format_list(entries: list[zoo.ZooEntry]) -> str:
    header = ["id", "name", "input", "params", "weights", "checksum"]
    rows = []
    for entry in entries:
        weights = entry.weights
        known = [a for a in zoo.CHECKSUMS if weights.get(a)]
        rows.append([entry.id, entry.manifest.get("name", ""), _shape(entry.manifest),
                     f"{entry.manifest.get('num_params') or 0:,}", weights.get("file") or "-",
                     known[0] if known else "-"])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i == 3 else c.ljust(w)
                       for i, (c, w) in enumerate(zip(row, widths))).rstrip()
             for row in [header, ["-" * w for w in widths], *rows]]
    return "\n".join(lines)


def format_info(entry: zoo.ZooEntry) -> str:
    m = entry.manifest
    lines = [f"{entry.id}: {m.get('name', '')}"]
    if m.get("description"):
        lines.append(f"  {m['description']}")
    lines += ["", _field("prototxt", f"{entry.prototxt} ({m.get('prototxt_format', '?')})"),
              _field("architecture", m.get("architecture")),
              _field("input", f"{m.get('input', {}).get('name', '?')} {_shape(m)}"),
              "preprocessing:"]
    lines += [_field(f"  {key}", value, none="none") for key, value in entry.preprocessing.items()]
    lines.append(_field("params", f"{m.get('num_params') or 0:,}"))
    if m.get("num_params_note"):
        lines.append(_field("  note", m["num_params_note"]))
    lines.append("outputs:")
    lines += [_field(f"  {blob}", what) for blob, what in (m.get("outputs") or {}).items()]
    labels = entry.labels
    separator = "; " if labels and any("," in label for label in labels) else ", "
    lines.append(_field("labels", f"{len(labels)}: {separator.join(labels[:5])}"
                        f"{' ...' if len(labels) > 5 else ''}" if labels
                        else m.get("labels_note") or "not published"))
    lines.append("weights:")
    weights = entry.weights
    for key in ("file", "size", *zoo.CHECKSUMS, "url", "archive", "note"):
        if key in weights and (weights[key] is not None or key in ("size", "sha256", "url")):
            value = weights[key]
            if key == "size" and value is not None:
                value = f"{value:,} bytes"
            lines.append(_field(f"  {key}", value))
    lines += [_field("source", m.get("source")), _field("license", m.get("license"))]
    return "\n".join(lines)


def _shape(manifest: dict[str, Any]) -> str:
    shape = (manifest.get("input") or {}).get("shape")
    return "x".join(str(d) for d in shape) if shape else "?"


def _field(key: str, value: Any, none: str = "unknown") -> str:
    label = f"{key}:"
    return f"{label:<16} {none if value is None else value}"
