"""Built-in converters: importing this package registers one converter per Caffe type.

Every module in this package except ``registry`` and private ``_`` helpers defines converters
and is imported here, so a new layer family is one new file.
"""
from __future__ import annotations

import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "registry" and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
