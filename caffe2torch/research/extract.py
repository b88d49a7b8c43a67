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
import re
import shutil
import socket
import struct
import sys
import zipfile
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from caffe2torch.build import CaffeNet
from caffe2torch.devices import Placement, placement_of
from caffe2torch.errors import Caffe2TorchError
from caffe2torch.preprocess import (
    PreprocessError,
    Preprocessing,
    default_preprocessing,
    list_images,
)
from caffe2torch.research.distributed import Ranks

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
    rank: int = 0  # under torch.distributed: this rank (processed counts its images only)
    world_size: int = 1

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
    read and preprocess images ahead of the net (into pinned memory for a CUDA net, copied
    without blocking); the outputs come back to the host while the next batch runs, and the
    shards are written by a background thread. ``resume=False`` discards an earlier partial
    run. ``progress=True`` shows a progress bar (tqdm) on stderr. ``on_batch(batches, images)``
    is called after each batch (for progress hooks; raising KeyboardInterrupt there behaves as
    Ctrl-C). Ctrl-C saves the finished batches and raises :class:`ExtractInterrupted`.

    The batches are always ``batch_size`` consecutive files of the sorted listing (less the
    files already done), so an interrupted and resumed run computes every image in the same
    batch as an uninterrupted one. Under ``torch.distributed`` (e.g. ``torchrun``) every rank
    calls this with the same arguments: the batches not yet done are split into one contiguous
    block per rank, each rank writes its own shards into the shared ``OUT.partial/``, and rank 0
    merges them into ``output`` in the listing's order once every rank is done (the folder must
    be on a filesystem every machine sees). The progress bar (rank 0) counts the whole job.
    ``optimize=True`` runs :func:`caffe2torch.optimize`'s model of ``net`` (keeping ``blobs``;
    the same features within 1e-5, and a run resumes either way).
    """
    output = Path(output)
    blobs = list(dict.fromkeys(blobs))
    _check_request(net, output, blobs, batch_size)
    prep = preprocessing or default_preprocessing(net.caffe.graph)
    root = Path(images)
    listing = list(files) if files is not None else list_images(root)
    ranks = Ranks()
    fingerprint = _fingerprint(net, blobs, prep)
    _check_same_job(ranks, fingerprint, listing)
    store = _open_store(ranks, Path(f"{output}.partial"), fingerprint, resume)
    if optimize:
        from caffe2torch.passes import optimize as optimize_net
        net = optimize_net(net, keep=blobs)
    done = store.done_files()
    ranks.barrier()  # every rank has read the same shards before any rank writes
    todo = _job_batches(listing, batch_size, done)
    mine = _share(todo, ranks.rank, ranks.size)
    result = ExtractResult(output=output, partial=store.directory, total=len(listing),
                           resumed=len(listing) - sum(len(b) for b in todo), rank=ranks.rank,
                           world_size=ranks.size)
    if result.resumed and ranks.first:
        log.info("resuming: %d of %d image(s) already in %s", result.resumed, len(listing),
                 store.directory)
    bar = _JobProgress(len(listing), result.resumed, progress and ranks.first, ranks)
    try:
        _run(net, prep, root, mine, blobs, checkpoint_every, store, result, bar, workers,
             on_batch)
        ranks.wait_for_all(bar.show)
    except KeyboardInterrupt:
        result.interrupted = True
        raise ExtractInterrupted(result) from None
    finally:
        bar.close()
    if ranks.first:
        result.failed = store.merge(output, listing, blobs, _blob_row_shapes(net, blobs))
    ranks.barrier()  # the output exists when every rank returns
    return result


def _check_same_job(ranks: Ranks, fingerprint: dict, listing: list[str]) -> None:
    """Every rank must run the same net, weights, blobs, preprocessing and file list."""
    digest = hashlib.sha256(json.dumps([fingerprint, listing]).encode()).hexdigest()
    found = ranks.gather(digest)
    other = [r for r, d in enumerate(found) if d != found[0]]
    ranks.agree(None if not other else
                f"ranks {other} have another net, weights, blobs, preprocessing or image list "
                "than rank 0; every rank must run the same command on the same files",
                ExtractError)


def _open_store(ranks: Ranks, directory: Path, fingerprint: dict, resume: bool) -> _ShardStore:
    """Rank 0 prepares ``OUT.partial/`` (or finds it made with other settings); then every
    other rank opens it, which also checks that it sees the same folder."""
    store, problem = None, None
    if ranks.first:
        try:
            store = _ShardStore(directory, fingerprint, resume, rank=0)
        except ExtractError as err:
            problem = str(err)
    ranks.agree(problem, ExtractError)
    if not ranks.first:
        if not (directory / "manifest.json").is_file():
            problem = (f"{directory} (made by rank 0) is not visible here (host "
                       f"{socket.gethostname()}); put the output on a filesystem every "
                       "machine shares")
        else:
            store = _ShardStore(directory, fingerprint, resume=True, rank=ranks.rank)
    ranks.agree(problem, ExtractError)
    return store


def _job_batches(listing: list[str], batch_size: int, done: set[str]) -> list[list[str]]:
    """The whole job's batches still to compute: ``batch_size`` consecutive files of the
    listing each, less the files already done."""
    batches = []
    for start in range(0, len(listing), batch_size):
        names = [n for n in listing[start:start + batch_size] if n not in done]
        if names:
            batches.append(names)
    return batches


def _share(batches: list[list[str]], rank: int, size: int) -> list[list[str]]:
    """Rank ``rank``'s contiguous block of ``batches`` (sizes differ by at most one)."""
    per, extra = divmod(len(batches), size)
    start = rank * per + min(rank, extra)
    return batches[start:start + per + (rank < extra)]


def _run(net, prep, root: Path, batches: list[list[str]], blobs: list[str],
         checkpoint_every: int, store: _ShardStore, result: ExtractResult, bar, workers: int,
         on_batch) -> None:
    """Load (threads), forward (the net's device) and store (a writer thread) the batches, each
    stage working on another batch: batch i + 1 runs while batch i's outputs come back."""
    placement = placement_of(net)
    pin = placement.device.type == "cuda"
    count, pending = 0, None
    try:
        for names, array, failures in _loaded_batches(batches, prep, root, workers, pin):
            launched = _forward(net, array, blobs, placement) if array is not None else None
            if pending is not None:
                count = _store_batch(*pending, store, result, bar, count, checkpoint_every,
                                     on_batch)
            pending = (names, launched, failures)
        if pending is not None:
            _store_batch(*pending, store, result, bar, count, checkpoint_every, on_batch)
    finally:
        store.flush()  # finished batches are kept on Ctrl-C too
        store.close()


def _store_batch(names, launched, failures, store: _ShardStore, result: ExtractResult, bar,
                 count: int, checkpoint_every: int, on_batch) -> int:
    features = _collect(launched) if launched is not None else {}
    failed = dict(failures)
    store.add([n for n in names if n not in failed], features, failures)
    result.processed += len(names)
    bar.update(len(names))
    count += 1
    if count % checkpoint_every == 0:
        store.flush()
    if on_batch is not None:
        on_batch(count, result.processed)
    return count


def _loaded_batches(batches: list[list[str]], prep: Preprocessing, root: Path, workers: int,
                    pin: bool = False) -> Iterator[tuple[list[str], torch.Tensor | None, list]]:
    """Batches read and preprocessed by ``workers`` threads, a few ahead, in order (as pinned
    tensors with ``pin``, ready for a non-blocking copy to the GPU)."""
    if workers <= 0:
        yield from (_load_tensor(batch, prep, root, pin) for batch in batches)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="caffe2torch-load")
    pending: deque[Future] = deque()
    queue = iter(batches)
    try:
        for batch in queue:
            pending.append(pool.submit(_load_tensor, batch, prep, root, pin))
            if len(pending) > workers:
                break
        while pending:
            yield pending.popleft().result()
            batch = next(queue, None)
            if batch is not None:
                pending.append(pool.submit(_load_tensor, batch, prep, root, pin))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _load_tensor(names: list[str], prep: Preprocessing, root: Path, pin: bool):
    names, array, failures = _load_batch(names, prep, root)
    if array is None:
        return names, None, failures
    tensor = torch.from_numpy(array)
    return names, tensor.pin_memory() if pin else tensor, failures


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


def _forward(net: CaffeNet, batch: torch.Tensor, blobs: list[str], placement: Placement):
    """Start the forward of one batch: its outputs on their way to the host, in float32 (on a
    GPU the copies are queued behind the forward; :func:`_collect` waits for them)."""
    with torch.no_grad():
        x = batch.to(placement.device, placement.dtype, non_blocking=True)
        values = net(x, outputs=blobs)
        host = {name: values[name].to("cpu", torch.float32, non_blocking=True)
                for name in blobs}
    ready = None
    if placement.device.type == "cuda":
        ready = torch.cuda.Event()
        ready.record()
    return host, ready


def _collect(launched) -> dict[str, np.ndarray]:
    host, ready = launched
    if ready is not None:
        ready.synchronize()
    return {name: value.numpy() for name, value in host.items()}


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
        weights.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return {"version": 1, "net": hashlib.sha256(definition).hexdigest(),
            "weights": weights.hexdigest(), "blobs": blobs, "preprocessing": prep.to_dict()}


class _JobProgress:
    """The progress bar (tqdm, on stderr) of the whole job: with several ranks, the count the
    ranks add up in the rendezvous store, else this process's."""

    def __init__(self, total: int, initial: int, enabled: bool, ranks: Ranks) -> None:
        self.initial, self.ranks, self.bar = initial, ranks, None
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self.bar = tqdm(total=total, initial=initial, unit="img", desc="extract",
                        file=sys.stderr, disable=not enabled, dynamic_ncols=True)

    def update(self, n: int) -> None:
        job = self.ranks.count(n) if self.ranks.size > 1 else None
        if self.bar is None:
            return
        if job is None:
            self.bar.update(n)
        else:
            self.show(job)

    def show(self, job: int | None) -> None:
        if self.bar is not None and job is not None and self.initial + job != self.bar.n:
            self.bar.update(self.initial + job - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------- shards


class _ShardStore:
    """``OUT.partial/``: manifest.json and shard files, each written to a temporary name and
    renamed into place (by a background thread, one shard at a time). Rank 0 writes
    ``shard-NNNNNN.npz``, rank r > 0 ``shard-NNNNNN-rR.npz``; every rank reads all of them."""

    def __init__(self, directory: Path, fingerprint: dict, resume: bool, rank: int = 0) -> None:
        self.directory, self.rank = directory, rank
        self.buffer: list[tuple[list[str], dict[str, np.ndarray], list]] = []
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="caffe2torch-write")
        self.writing: Future | None = None
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
            if rank == 0:  # before the other ranks start writing
                for stale in directory.glob("*.tmp"):
                    stale.unlink()
        else:
            directory.mkdir(parents=True)
            _write_atomic(manifest, json.dumps(fingerprint, indent=1).encode())
        self.suffix = "" if rank == 0 else f"-r{rank}"
        own = [re.fullmatch(rf"shard-(\d+){self.suffix}", p.stem) for p in self.shards()]
        self.next_number = max((int(m[1]) + 1 for m in own if m), default=0)

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
        """Write the buffered batches as one shard (in the background: the previous shard is
        waited for first, so at most one is in flight)."""
        if not self.buffer:
            return
        files = [f for chunk in self.buffer for f in chunk[0]]
        failed = [list(item) for chunk in self.buffer for item in chunk[2]]
        arrays: dict[str, np.ndarray] = {"files": np.asarray(files, dtype=str),
                                         "failed": np.asarray(failed, dtype=str).reshape(-1, 2)}
        names = {name for chunk in self.buffer for name in chunk[1]}
        for name in names:
            arrays[f"blob:{name}"] = np.concatenate([c[1][name] for c in self.buffer if c[1]])
        path = self.directory / f"shard-{self.next_number:06d}{self.suffix}.npz"
        self.next_number += 1
        self.buffer = []
        self._wait()
        self.writing = self.writer.submit(_write_atomic, path, arrays)

    def _wait(self) -> None:
        if self.writing is not None:
            writing, self.writing = self.writing, None
            writing.result()

    def close(self) -> None:
        """Wait for the shard being written (its error, if any, is raised here)."""
        try:
            self._wait()
        finally:
            self.writer.shutdown(wait=True)

    def merge(self, output: Path, listing: list[str], blobs: list[str],
              row_shapes: dict[str, tuple[int, ...]]) -> list[tuple[str, str]]:
        """Stream the shards' rows into ``output`` in ``listing``'s order (files of the listing
        only, each once); returns the failures, in that order too."""
        shards = self.shards()
        where: dict[str, tuple[int, int]] = {}
        errors: dict[str, str] = {}
        for number, shard in enumerate(shards):
            with np.load(shard, allow_pickle=False) as data:
                names = data["files"].tolist()
                for row, name in enumerate(names):
                    where.setdefault(name, (number, row))
                for name, error in data["failed"]:
                    errors.setdefault(str(name), str(error))
                if names:
                    row_shapes.update({b: data[f"blob:{b}"].shape[1:] for b in blobs})
        files = [name for name in listing if name in where]
        failed = [(name, errors[name]) for name in listing if name in errors and name not in where]
        plan: list[tuple[Path, list[int]]] = []
        for name in files:
            number, row = where[name]
            if plan and plan[-1][0] == shards[number]:
                plan[-1][1].append(row)
            else:
                plan.append((shards[number], [row]))
        writer = _write_npz if output.suffix.lower() == ".npz" else _write_safetensors
        tmp = output.with_name(output.name + ".tmp")
        writer(tmp, files, failed, blobs, row_shapes, plan)
        os.replace(tmp, output)
        shutil.rmtree(self.directory)
        return failed


def _rows(plan, blob: str, cached: int = 8) -> Iterator[np.ndarray]:
    """The rows of ``blob`` run by run of the plan (the last few shards' arrays kept, for runs
    that alternate between shards after a resumed run)."""
    arrays: OrderedDict[Path, np.ndarray] = OrderedDict()
    for shard, rows in plan:
        if shard not in arrays:
            with np.load(shard, allow_pickle=False) as data:
                arrays[shard] = data[f"blob:{blob}"]
            if len(arrays) > cached:
                arrays.popitem(last=False)
        arrays.move_to_end(shard)
        yield np.ascontiguousarray(arrays[shard][rows], dtype=np.float32)


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
