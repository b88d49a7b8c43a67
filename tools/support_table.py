"""Rewrite the support table in README.md from the converter registry (``--check``: fail on drift)."""
from __future__ import annotations

import sys
from pathlib import Path

from caffe2torch.support import MARK_BEGIN, MARK_END, support_table

README = Path(__file__).resolve().parents[1] / "README.md"


def render(text: str) -> str:
    start, end = text.index(MARK_BEGIN), text.index(MARK_END)
    return text[:start] + MARK_BEGIN + "\n" + support_table() + "\n" + text[end:]


def main(argv: list[str]) -> int:
    text = README.read_text()
    new = render(text)
    if "--check" in argv:
        if new != text:
            print("README.md's support table is out of date: run python tools/support_table.py")
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
