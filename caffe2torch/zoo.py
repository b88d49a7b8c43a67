"""The model zoo: ``model_zoo/<id>/`` holds a deploy prototxt and a manifest.json.

A manifest records what a user needs around the prototxt: the input and its preprocessing, the
number of parameters (elements of the Caffe parameter blobs, BatchNorm statistics included), the
output labels where public, and the official weights (file name, size and checksums where known
for certain, download URL, source and license). :func:`fetch_weights` downloads the weights
(resumable, atomic) and refuses a file whose size or checksum does not match.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

from caffe2torch.errors import Caffe2TorchError, WeightsError


def _zoo_dir() -> Path:
    """``$CAFFE2TORCH_ZOO``, else the copy an installed wheel ships inside the package, else the
    checkout's top-level ``model_zoo/`` (a source tree or an editable install)."""
    if os.environ.get("CAFFE2TORCH_ZOO"):
        return Path(os.environ["CAFFE2TORCH_ZOO"])
    packaged = Path(__file__).resolve().parent / "model_zoo"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[1] / "model_zoo"


ZOO_DIR = _zoo_dir()
CHECKSUMS = ("sha256", "sha1")  # strongest first; the first one the manifest knows is checked
_CHUNK = 1 << 20
log = logging.getLogger("caffe2torch")


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
    def labels(self) -> list[str] | None:
        """Class names by output index: the manifest's ``labels``, else the lines of its
        ``labels_file`` (relative to the entry's folder), else ``None``."""
        if self.manifest.get("labels"):
            return list(self.manifest["labels"])
        name = self.manifest.get("labels_file")
        if not name:
            return None
        path = self.directory / name
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise Caffe2TorchError(f"model zoo entry '{self.id}': labels file {path} cannot be "
                                   f"read ({err})") from None
        return [line.strip() for line in lines if line.strip()]

    @property
    def weights(self) -> dict[str, Any]:
        return dict(self.manifest.get("weights") or {})

    def verify_weights(self, path: str | os.PathLike[str]) -> bool:
        """Check the file's size and checksum against the manifest; False when no checksum is known.

        Raises :class:`WeightsError` on a mismatch.
        """
        return _verify(path, self.weights, self.id) is not None


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    return file_digest(path, "sha256", chunk)


def file_digest(path: str | os.PathLike[str], algorithm: str, chunk: int = 1 << 22) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: str | os.PathLike[str], weights: dict[str, Any], entry_id: str) -> str | None:
    """The checksum that verified ``path`` (None when none is known); raises on a mismatch."""
    what = f"the zoo's {weights.get('file')} for '{entry_id}'"
    size = weights.get("size")
    actual_size = os.path.getsize(path)
    if size is not None and actual_size != size:
        raise WeightsError(f"{path}: {actual_size} bytes; {what} has {size} bytes")
    for algorithm in CHECKSUMS:
        expected = weights.get(algorithm)
        if expected:
            actual = file_digest(path, algorithm)
            if actual != expected.lower():
                raise WeightsError(f"{path}: {algorithm} {actual} does not match {what} "
                                   f"({expected})")
            return algorithm
    return None


def list_entries() -> list[ZooEntry]:
    if not ZOO_DIR.is_dir():
        return []
    return [get_entry(p.name) for p in sorted(ZOO_DIR.iterdir()) if (p / "manifest.json").is_file()]


def get_entry(entry_id: str) -> ZooEntry:
    directory = ZOO_DIR / entry_id
    manifest_path = directory / "manifest.json"
    if Path(entry_id).name != entry_id or entry_id.startswith(".") or not manifest_path.is_file():
        known = [e.id for e in list_entries()]
        raise Caffe2TorchError(f"no model zoo entry '{entry_id}' in {ZOO_DIR}; known: {known}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as err:
        raise Caffe2TorchError(f"{manifest_path}:{err.lineno}:{err.colno}: {err.msg}") from None
    return ZooEntry(id=entry_id, directory=directory, manifest=manifest)


def entry_for_prototxt(path: str | os.PathLike[str]) -> ZooEntry | None:
    """The zoo entry whose prototxt is the file at ``path``, or a byte-identical copy of it."""
    try:
        wanted = Path(path).resolve()
        size = wanted.stat().st_size
    except (OSError, ValueError):
        return None
    entries = list_entries()
    for entry in entries:
        if entry.prototxt.resolve() == wanted:
            return entry
    for entry in entries:
        if _same_bytes(entry.prototxt, wanted, size):
            return entry
    return None


def entries_named(net_name: str) -> list[ZooEntry]:
    """The zoo entries whose prototxt declares the net name ``net_name`` (its ``name:`` field)."""
    if not net_name:
        return []
    return [entry for entry in list_entries() if _net_name(entry.prototxt) == net_name]


def _same_bytes(ours: Path, theirs: Path, size: int) -> bool:
    try:
        return ours.stat().st_size == size and ours.read_bytes() == theirs.read_bytes()
    except OSError:
        return False


def _net_name(prototxt: Path) -> str | None:
    try:
        text = prototxt.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    found = re.search(r'^name:\s*"([^"]*)"', text, re.MULTILINE)
    return found.group(1) if found else None


# --------------------------------------------------------------------------- downloading

def fetch_weights(entry: ZooEntry | str, dest_dir: str | os.PathLike[str] = ".",
                  url: str | None = None, *, progress: bool = True,
                  timeout: float = 60.0) -> Path:
    """Download an entry's official weights into ``dest_dir`` and return the file's path.

    The download goes to ``<file>.part`` (resumed with an HTTP range request if a previous one
    was cut off) and is renamed into place only after its size and checksum (where the manifest
    knows them) match; a mismatching file is deleted and a :class:`WeightsError` raised. An
    existing ``<file>`` is verified and kept. ``url`` overrides the manifest's URL; where the
    manifest names an ``archive``, the URL serves that tar archive and the file is taken out of it.
    """
    entry = get_entry(entry) if isinstance(entry, str) else entry
    weights = entry.weights
    name = weights.get("file")
    if not name or Path(name).name != name:
        raise Caffe2TorchError(f"model zoo entry '{entry.id}' names no weights file")
    url = url or weights.get("url")
    if not url:
        where = f": {weights['note']}" if weights.get("note") else ""
        raise Caffe2TorchError(f"no download URL is known for '{entry.id}' ({name}){where}; "
                               f"pass url= (on the command line: --url URL)")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / name
    if target.is_file():
        _report(_verify(target, weights, entry.id), target)
        return target
    part = target.with_name(name + ".part")
    archive = dest_dir / Path(weights["archive"]).name if weights.get("archive") else None
    if archive is None:
        _download(url, part, progress, timeout)
    else:
        if not archive.is_file():
            _download_to(url, archive, progress, timeout)
        _extract_member(archive, name, part)
    try:
        algorithm = _verify(part, weights, entry.id)
    except WeightsError:
        for bad in (part, archive):
            if bad is not None:
                bad.unlink()
        raise
    os.replace(part, target)
    _report(algorithm, target)
    return target


def _report(algorithm: str | None, path: Path) -> None:
    if algorithm is None:
        log.warning("%s: no published checksum; the file was not verified", path)
    else:
        log.info("%s: %s verified", path, algorithm)


def _download_to(url: str, target: Path, progress: bool, timeout: float) -> None:
    part = target.with_name(target.name + ".part")
    _download(url, part, progress, timeout)
    os.replace(part, target)


def _download(url: str, part: Path, progress: bool, timeout: float) -> None:
    """Fetch ``url`` into ``part``, continuing from its current size when the server allows."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise Caffe2TorchError(f"{url}: only http:// and https:// URLs can be fetched")
    start = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "caffe2torch"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:  # nothing after `start`: the part is already complete
            return
        raise Caffe2TorchError(f"downloading {url} failed: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise Caffe2TorchError(f"downloading {url} failed: {reason}") from None
    with response:
        if start and not _resumes_at(response, start):
            start = 0  # the server sent the whole file: start over
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        try:
            with open(part, "ab" if start else "wb") as out, \
                    _progress_bar(total, start, part.name[:-5], progress) as bar:
                while block := response.read(_CHUNK):
                    out.write(block)
                    bar.update(len(block))
        except (OSError, http.client.HTTPException) as err:
            _interrupted(url, part, str(err))
    if total is not None and part.stat().st_size < total:
        _interrupted(url, part, f"the server announced {total} bytes")


def _interrupted(url: str, part: Path, why: str) -> NoReturn:
    raise Caffe2TorchError(f"downloading {url} was interrupted ({why}); {part} keeps "
                           f"{part.stat().st_size} bytes: run again to resume")


def _resumes_at(response, start: int) -> bool:
    if response.status != 206:
        return False
    content_range = response.headers.get("Content-Range", "")
    if not content_range.startswith(f"bytes {start}-"):
        raise Caffe2TorchError(f"{response.url}: asked for bytes from {start}, the server sent "
                               f"'{content_range}'")
    return True


def _extract_member(archive: Path, name: str, part: Path) -> None:
    """Copy the regular file called ``name`` (in any folder) out of a tar archive into ``part``."""
    try:
        with tarfile.open(archive) as tar:
            member = next((m for m in tar if m.isfile()
                           and PurePosixPath(m.name).name == name), None)
            if member is None:
                raise Caffe2TorchError(f"{archive}: no file named {name} in the archive")
            source = tar.extractfile(member)
            with source, open(part, "wb") as out:
                while block := source.read(_CHUNK):
                    out.write(block)
    except (tarfile.TarError, EOFError) as err:
        raise Caffe2TorchError(f"{archive}: not a readable tar archive ({err}); delete it and "
                               f"fetch again") from None


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        return None


def _progress_bar(total: int | None, initial: int, desc: str, enabled: bool):
    """A tqdm byte counter on stderr (nothing when disabled or tqdm is not installed)."""
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True,
                unit_divisor=1024, file=sys.stderr, leave=False)
