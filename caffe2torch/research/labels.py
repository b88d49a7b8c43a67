"""Label files: one class name per line, by output index (shared by classify and detect)."""
from __future__ import annotations

import os
from pathlib import Path

from caffe2torch.errors import Caffe2TorchError


def read_text(path: str | os.PathLike[str], error: type[Caffe2TorchError]) -> str:
    """The text of a labels file; ``error`` (the command's own class) when it cannot be read."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"labels file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise error(f"labels file {path}: cannot read it ({err})") from None


def name_lines(path: str | os.PathLike[str], text: str, error: type[Caffe2TorchError],
               first: str) -> list[str]:
    """One name per line (blank lines at the end ignored); ``first`` says what line 1 is."""
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    empty = [i + 1 for i, name in enumerate(names) if not name]
    if not names or empty:
        where = f"blank line(s) {empty[:5]}" if empty else "no names"
        raise error(f"labels file {path}: {where}; expected one class name per line, "
                    f"line 1 for {first}")
    return names
