"""The model zoo: ``model_zoo/<id>/`` holds a deploy prototxt and a manifest.json."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caffe2torch.errors import Caffe2TorchError, WeightsError

ZOO_DIR = Path(os.environ.get("CAFFE2TORCH_ZOO", Path(__file__).resolve().parents[1] / "model_zoo"))


@dataclass(frozen=True)
class ZooEntry:
    id: str
    directory: Path
    manifest: dict[str, Any]

    @property
    def prototxt(self) -> Path:
        return self.directory / self.manifest.get("prototxt", "deploy.prototxt")

    @property
    def preprocessing(self) -> dict[str, Any]:
        return dict(self.manifest.get("preprocessing") or {})

    @property
    def weights(self) -> dict[str, Any]:
        return dict(self.manifest.get("weights") or {})

    def verify_weights(self, path: str | os.PathLike[str]) -> bool:
        """Check the file's sha256 against the manifest; False when no checksum is known."""
        expected = self.weights.get("sha256")
        if not expected:
            return False
        actual = sha256_file(path)
        if actual != expected:
            raise WeightsError(f"{path}: sha256 {actual} does not match the zoo's {expected} "
                               f"for '{self.id}' ({self.weights.get('file')})")
        return True


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def list_entries() -> list[ZooEntry]:
    if not ZOO_DIR.is_dir():
        return []
    return [get_entry(p.name) for p in sorted(ZOO_DIR.iterdir()) if (p / "manifest.json").is_file()]


def get_entry(entry_id: str) -> ZooEntry:
    directory = ZOO_DIR / entry_id
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        known = [p.name for p in sorted(ZOO_DIR.iterdir())] if ZOO_DIR.is_dir() else []
        raise Caffe2TorchError(f"no model zoo entry '{entry_id}' in {ZOO_DIR}; known: {known}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as err:
        raise Caffe2TorchError(f"{manifest_path}:{err.lineno}:{err.colno}: {err.msg}") from None
    return ZooEntry(id=entry_id, directory=directory, manifest=manifest)
