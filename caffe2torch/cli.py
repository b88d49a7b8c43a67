"""The ``caffe2torch`` command line: one subcommand per module in ``caffe2torch.commands``.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``. Errors print ``caffe2torch: error: ...`` on stderr and exit 1 (``-v`` shows
the traceback); tables go to stdout, notes to stderr.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
import traceback
from collections.abc import Sequence

from caffe2torch.errors import Caffe2TorchError

PROG = "caffe2torch"


def _command_modules():
    import caffe2torch.commands as package
    names = sorted(info.name for info in pkgutil.iter_modules(package.__path__)
                   if not info.name.startswith("_"))
    return [importlib.import_module(f"{package.__name__}.{name}") for name in names]


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Convert Caffe networks (prototxt + caffemodel) to PyTorch.")
    parser.add_argument("-V", "--version", action="store_true", help="print the version and exit")
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true",
                         help="show notes while converting and a traceback on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        sub = subparsers.add_parser(
            module.NAME, help=module.HELP, description=module.__doc__, parents=[verbose],
            formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.version:
        from caffe2torch import __version__
        print(f"{PROG} {__version__}")
        return 0
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format=f"{PROG}: %(message)s", stream=sys.stderr)
    try:
        return int(args.run(args) or 0)
    except (Caffe2TorchError, OSError) as err:
        if args.verbose:
            traceback.print_exc()
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
