"""Extract features (any blobs) for a folder of images: batched, threaded, resumable.

Results go to ``OUT.partial/`` as numbered shards as the run goes (every ``checkpoint_every``
batches, and on Ctrl-C), each written to a temporary name and renamed, so an interrupted or
killed run leaves only complete shards. Running again with the same settings skips the files
the shards hold. At the end the shards are streamed into ``OUT``:

- ``.npz``: ``files`` (relative paths), one ``(N, ...)`` float32 array per blob in that row
  order, and ``failed`` (``[file, error]`` rows for images that could not be read);
- ``.safetensors``: one tensor per blob; ``files`` and ``failed`` as JSON in the metadata.

:func:`read_features` reads either back, keyed by file name.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import struct
import sys
import zipfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from caffe2torch.build import CaffeNet
from caffe2torch.errors import Caffe2TorchError
from caffe2torch.preprocess import (
    PreprocessError,
    Preprocessing,
    default_preprocessing,
    list_images,
)

log = logging.getLogger("caffe2torch")

FORMATS = (".npz", ".safetensors")
_RESERVED = ("files", "failed")


class ExtractError(Caffe2TorchError):
    """Settings that do not fit (unknown blob, output format, a partial run made differently)."""


class ExtractInterrupted(KeyboardInterrupt):
    """Ctrl-C during extraction; the finished batches are saved and ``result`` says how many."""

    def __init__(self, result: ExtractResult) -> None:
        super().__init__(f"interrupted after {result.processed} image(s); "
                         f"{result.done} of {result.total} are saved in {result.partial}")
        self.result = result


@dataclass
class ExtractResult:
    output: Path
    partial: Path
    total: int  # images in the folder
    processed: int = 0  # computed by this run
    resumed: int = 0  # taken from an earlier run's shards
    failed: list[tuple[str, str]] = field(default_factory=list)
    interrupted: bool = False

    @property
    def done(self) -> int:
        return self.resumed + self.processed


@dataclass
class Features:
    """Extracted features: ``blobs[name]`` is ``(len(files), ...)``; ``features[file]`` a dict."""

    files: list[str]
    blobs: dict[str, np.ndarray]
    failed: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, file: str) -> dict[str, np.ndarray]:
        index = self._index.get(file)
        if index is None:
            raise KeyError(file)
        return {name: values[index] for name, values in self.blobs.items()}

    @property
    def _index(self) -> dict[str, int]:
        if "_index_cache" not in self.__dict__:
            self.__dict__["_index_cache"] = {f: i for i, f in enumerate(self.files)}
        return self.__dict__["_index_cache"]


def extract_features(
        net: CaffeNet, images: str | os.PathLike[str], blobs: Sequence[str],
        output: str | os.PathLike[str], *, preprocessing: Preprocessing | None = None,
        batch_size: int = 32, workers: int = 2, checkpoint_every: int = 10, resume: bool = True,
        progress: bool = False, files: Sequence[str] | None = None,
        on_batch: Callable[[int, int], None] | None = None,
        optimize: bool = False) -> ExtractResult:
    """Features of ``blobs`` for every image under ``images``, written to ``output``.

    ``files`` restricts the run to those paths (relative to ``images``). ``workers`` threads
    read and preprocess images ahead of the net. ``resume=False`` discards an earlier partial
    run. ``progress=True`` shows a progress bar (tqdm) on stderr. ``on_batch(batches, images)`` is called after each batch (for progress hooks; raising
    KeyboardInterrupt there behaves as Ctrl-C). Ctrl-C saves the finished batches and raises
    :class:`ExtractInterrupted`. ``optimize=True`` runs :func:`caffe2torch.optimize`'s model of
    ``net`` (keeping ``blobs``; same features within 1e-5, and a run resumes either way).
    """
    output = Path(output)
    blobs = list(dict.fromkeys(blobs))
    _check_request(net, output, blobs, batch_size)
    prep = preprocessing or default_preprocessing(net.caffe.graph)
    root = Path(images)
    listing = list(files) if files is not None else list_images(root)
    store = _ShardStore(Path(f"{output}.partial"), _fingerprint(net, blobs, prep), resume)
    if optimize:
        from caffe2torch.passes import optimize as optimize_net
        net = optimize_net(net, keep=blobs)
    done = store.done_files()
    todo = [f for f in listing if f not in done]
    result = ExtractResult(output=output, partial=store.directory, total=len(listing),
                           resumed=len(listing) - len(todo))
    if result.resumed:
        log.info("resuming: %d of %d image(s) already in %s", result.resumed, len(listing),
                 store.directory)
    bar = _progress(len(listing), result.resumed, progress)
    try:
        _run(net, prep, root, todo, blobs, batch_size, workers, checkpoint_every, store, result,
             bar, on_batch)
    except KeyboardInterrupt:
        result.interrupted = True
        raise ExtractInterrupted(result) from None
    finally:
        bar.close()
    result.failed = store.merge(output, listing, blobs, _blob_row_shapes(net, blobs))
    return result


def _run(net, prep, root: Path, todo: list[str], blobs: list[str], batch_size: int,
         workers: int, checkpoint_every: int, store: _ShardStore, result: ExtractResult, bar,
         on_batch) -> None:
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    count = 0
    try:
        for names, array, failures in _loaded_batches(batches, prep, root, workers):
            features = _forward(net, array, blobs) if array is not None else {}
            ok = [n for n in names if n not in dict(failures)]
            store.add(ok, features, failures)
            result.processed += len(names)
            bar.update(len(names))
            count += 1
            if count % checkpoint_every == 0:
                store.flush()
            if on_batch is not None:
                on_batch(count, result.processed)
    finally:
        store.flush()  # finished batches are kept on Ctrl-C too


def _loaded_batches(batches: list[list[str]], prep: Preprocessing, root: Path,
                    workers: int) -> Iterator[tuple[list[str], np.ndarray | None, list]]:
    """Batches read and preprocessed by ``workers`` threads, a few ahead, in order."""
    if workers <= 0:
        yield from (_load_batch(batch, prep, root) for batch in batches)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="caffe2torch-load")
    pending: deque[Future] = deque()
    queue = iter(batches)
    try:
        for batch in queue:
            pending.append(pool.submit(_load_batch, batch, prep, root))
            if len(pending) > workers:
                break
        while pending:
            yield pending.popleft().result()
            batch = next(queue, None)
            if batch is not None:
                pending.append(pool.submit(_load_batch, batch, prep, root))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _load_batch(names: list[str], prep: Preprocessing,
                root: Path) -> tuple[list[str], np.ndarray | None, list[tuple[str, str]]]:
    arrays, failures = [], []
    for name in names:
        try:
            arrays.append(prep(root / name))
        except PreprocessError as err:
            failures.append((name, str(err)))
    if not arrays:
        return names, None, failures
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ExtractError(f"images of different sizes after preprocessing ({sorted(shapes)}); "
                           "give an exact size (H, W) or a crop")
    return names, np.stack(arrays), failures


def _forward(net: CaffeNet, array: np.ndarray, blobs: list[str]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        values = net(torch.from_numpy(array), outputs=blobs)
    return {name: np.ascontiguousarray(values[name].numpy(), dtype=np.float32)
            for name in blobs}


def _check_request(net: CaffeNet, output: Path, blobs: list[str], batch_size: int) -> None:
    if output.suffix.lower() not in FORMATS:
        raise ExtractError(f"{output}: unknown output format '{output.suffix}'; expected "
                           f"{' or '.join(FORMATS)}")
    if not blobs:
        raise ExtractError("no blobs to extract; name at least one (e.g. fc7)")
    unknown = [b for b in blobs if b not in net.caffe.blob_nodes]
    if unknown:
        raise ExtractError(f"no blob named {unknown} in net '{net.caffe.graph.name}'; its blobs: "
                           f"{sorted(net.caffe.blob_nodes)}")
    clashing = [b for b in blobs if b in _RESERVED]
    if clashing:
        raise ExtractError(f"blob name(s) {clashing} clash with the output's own keys {_RESERVED}")
    if len(net.caffe.input_names) != 1:
        raise ExtractError(f"extraction feeds one image input; net '{net.caffe.graph.name}' "
                           f"has {net.caffe.input_names}")
    if batch_size < 1:
        raise ExtractError(f"batch size {batch_size}: expected 1 or more")


def _blob_row_shapes(net: CaffeNet, blobs: list[str]) -> dict[str, tuple[int, ...]]:
    graph = net.caffe.graph
    return {b: tuple(graph.blob(b).shape or (0,))[1:] for b in blobs}


def _fingerprint(net: CaffeNet, blobs: list[str], prep: Preprocessing) -> dict:
    """What must match for a partial run to be resumed: net, weights, blobs, preprocessing."""
    definition = net.caffe.graph.definition.net.SerializeToString(deterministic=True)
    weights = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(net.state_dict().items()):
        weights.update(name.encode())
        weights.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return {"version": 1, "net": hashlib.sha256(definition).hexdigest(),
            "weights": weights.hexdigest(), "blobs": blobs, "preprocessing": prep.to_dict()}


def _progress(total: int, initial: int, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoProgress()
    return tqdm(total=total, initial=initial, unit="img", desc="extract", file=sys.stderr,
                disable=not enabled, dynamic_ncols=True)


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------- shards


class _ShardStore:
    """``OUT.partial/``: manifest.json and shard-NNNNNN.npz files, each renamed into place."""

    def __init__(self, directory: Path, fingerprint: dict, resume: bool) -> None:
        self.directory = directory
        self.buffer: list[tuple[list[str], dict[str, np.ndarray], list]] = []
        manifest = directory / "manifest.json"
        if directory.exists() and not resume:
            shutil.rmtree(directory)
        if directory.exists():
            if not manifest.is_file():
                raise ExtractError(f"{directory} exists but is not a partial extraction "
                                   "(no manifest.json); move it away")
            found = json.loads(manifest.read_text())
            if found != fingerprint:
                changed = sorted(k for k in fingerprint if found.get(k) != fingerprint[k])
                raise ExtractError(f"{directory} holds a partial run made with other settings "
                                   f"(different {', '.join(changed)}); delete it or start over "
                                   "(--restart / resume=False)")
            for stale in directory.glob("*.tmp"):
                stale.unlink()
        else:
            directory.mkdir(parents=True)
            _write_atomic(manifest, json.dumps(fingerprint, indent=1).encode())
        shards = self.shards()
        self.next_number = int(shards[-1].stem.split("-")[1]) + 1 if shards else 0

    def shards(self) -> list[Path]:
        return sorted(self.directory.glob("shard-*.npz"))

    def done_files(self) -> set[str]:
        done: set[str] = set()
        for shard in self.shards():
            with np.load(shard, allow_pickle=False) as data:
                done.update(data["files"].tolist())
                done.update(data["failed"][:, 0].tolist() if len(data["failed"]) else [])
        return done

    def add(self, files: list[str], features: dict[str, np.ndarray], failed: list) -> None:
        self.buffer.append((files, features, failed))

    def flush(self) -> None:
        if not self.buffer:
            return
        files = [f for chunk in self.buffer for f in chunk[0]]
        failed = [list(item) for chunk in self.buffer for item in chunk[2]]
        arrays: dict[str, np.ndarray] = {"files": np.asarray(files, dtype=str),
                                         "failed": np.asarray(failed, dtype=str).reshape(-1, 2)}
        names = {name for chunk in self.buffer for name in chunk[1]}
        for name in names:
            arrays[f"blob:{name}"] = np.concatenate([c[1][name] for c in self.buffer if c[1]])
        path = self.directory / f"shard-{self.next_number:06d}.npz"
        self.next_number += 1
        _write_atomic(path, arrays)
        self.buffer = []

    def merge(self, output: Path, listing: list[str], blobs: list[str],
              row_shapes: dict[str, tuple[int, ...]]) -> list[tuple[str, str]]:
        """Stream the shards into ``output`` (rows of files in ``listing`` only); returns the
        failures."""
        wanted = set(listing)
        plan, files, failed = [], [], []
        seen: set[str] = set()
        for shard in self.shards():
            with np.load(shard, allow_pickle=False) as data:
                names = data["files"].tolist()
                keep = [i for i, n in enumerate(names) if n in wanted and n not in seen]
                seen.update(names[i] for i in keep)
                files += [names[i] for i in keep]
                failed += [(str(a), str(b)) for a, b in data["failed"] if a in wanted]
                shapes = {b: data[f"blob:{b}"].shape[1:] for b in blobs if names}
            plan.append((shard, keep))
            row_shapes.update(shapes)
        writer = _write_npz if output.suffix.lower() == ".npz" else _write_safetensors
        tmp = output.with_name(output.name + ".tmp")
        writer(tmp, files, failed, blobs, row_shapes, plan)
        os.replace(tmp, output)
        shutil.rmtree(self.directory)
        return failed


def _rows(plan, blob: str) -> Iterator[np.ndarray]:
    for shard, keep in plan:
        if keep:
            with np.load(shard, allow_pickle=False) as data:
                yield np.ascontiguousarray(data[f"blob:{blob}"][keep], dtype=np.float32)


def _write_npz(path: Path, files, failed, blobs, row_shapes, plan) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, value in (("files", np.asarray(files, dtype=str)),
                            ("failed", np.asarray(failed, dtype=str).reshape(-1, 2))):
            with archive.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, value, allow_pickle=False)
        for blob in blobs:
            header = {"descr": "<f4", "fortran_order": False,
                      "shape": (len(files), *row_shapes[blob])}
            with archive.open(f"{blob}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_2_0(member, header)
                for rows in _rows(plan, blob):
                    member.write(rows.astype("<f4", copy=False).tobytes())


def _write_safetensors(path: Path, files, failed, blobs, row_shapes, plan) -> None:
    header: dict[str, object] = {"__metadata__": {
        "format": "caffe2torch-features", "files": json.dumps(files),
        "failed": json.dumps(failed)}}
    offset = 0
    for blob in blobs:
        shape = [len(files), *row_shapes[blob]]
        size = 4 * int(np.prod(shape))
        header[blob] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(text)))
        handle.write(text)
        for blob in blobs:
            handle.writelines(rows.astype("<f4", copy=False).tobytes()
                              for rows in _rows(plan, blob))
        handle.flush()
        os.fsync(handle.fileno())


def _write_atomic(path: Path, content: bytes | dict[str, np.ndarray]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        if isinstance(content, dict):
            np.savez(handle, **content)
        else:
            handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


# ---------------------------------------------------------------------- reading


def read_features(path: str | os.PathLike[str]) -> Features:
    """Read an ``extract`` output (.npz or .safetensors)."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors.numpy import safe_open
        with safe_open(str(path), framework="np") as handle:
            meta = handle.metadata() or {}
            blobs = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (safe_open is no dict)
        return Features(files=json.loads(meta.get("files", "[]")), blobs=blobs,
                        failed=[tuple(x) for x in json.loads(meta.get("failed", "[]"))])
    if path.suffix.lower() != ".npz":
        raise ExtractError(f"{path}: expected a .npz or .safetensors feature file")
    with np.load(path, allow_pickle=False) as data:
        blobs = {name: data[name] for name in data.files if name not in _RESERVED}
        return Features(files=data["files"].tolist(), blobs=blobs,
                        failed=[(str(a), str(b)) for a, b in data["failed"]])
