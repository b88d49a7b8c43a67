"""The ranks of a ``torchrun`` job, for feature extraction split across processes and machines.

``torchrun --nproc-per-node N -m caffe2torch extract ...`` starts N copies of the command with
RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address in their environment.
:func:`launched_from_env` joins them into a ``torch.distributed`` process group (nccl for CUDA,
one GPU per rank by LOCAL_RANK; gloo on the CPU). :class:`Ranks` is what extraction needs from
the group: rank and size, object exchange and waiting over gloo (with a long timeout, since a
rank that finishes first waits for the slowest), and a job-wide counter in the rendezvous store
for the progress bar.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import torch
import torch.distributed as dist

from caffe2torch.errors import Caffe2TorchError

#: how long a rank waits for the others (the one that finishes first waits for the slowest)
WAIT = timedelta(days=2)


class DistributedError(Caffe2TorchError):
    """Ranks that disagree (other settings, an output folder one machine does not see)."""


def torchrun_world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


@contextlib.contextmanager
def launched_from_env(device: str | None) -> Iterator[str | None]:
    """Under torchrun with more than one process: join the process group for the duration
    (nccl when ``device`` is CUDA, each rank on ``cuda:LOCAL_RANK``; gloo otherwise) and yield
    this rank's device. Outside torchrun: yield ``device`` and do nothing."""
    if torchrun_world_size() <= 1 or not dist.is_available() or dist.is_initialized():
        yield device
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "gloo"
    if device is not None and torch.device(device).type == "cuda":
        if torch.device(device).index is None:
            device = f"cuda:{local_rank}"
        if torch.cuda.is_available():
            torch.cuda.set_device(torch.device(device))
            backend = "nccl"
    dist.init_process_group(backend=backend, timeout=WAIT)
    if dist.get_rank() != 0:  # the same notes from every rank would repeat N times
        logging.getLogger("caffe2torch").setLevel(logging.ERROR)
    try:
        yield device
    finally:
        dist.destroy_process_group()


class Ranks:
    """This process's place in the torch.distributed job (rank 0 of 1 when there is none)."""

    def __init__(self) -> None:
        self.rank, self.size, self.group, self.store = 0, 1, None, None
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            self.rank, self.size = dist.get_rank(), dist.get_world_size()
            self.group = dist.new_group(backend="gloo", timeout=WAIT)
            get_store = getattr(dist.distributed_c10d, "_get_default_store", None)
            with contextlib.suppress(RuntimeError, ValueError):
                self.store = get_store() if get_store is not None else None
        self.key = f"caffe2torch/{self.gather(uuid.uuid4().hex)[0]}"

    @property
    def first(self) -> bool:
        return self.rank == 0

    def gather(self, value: object) -> list:
        """Every rank's ``value``, in rank order."""
        if self.group is None:
            return [value]
        found: list = [None] * self.size
        dist.all_gather_object(found, value, group=self.group)
        return found

    def agree(self, problem: str | None, error: type[Exception] = DistributedError) -> None:
        """Raise ``error`` on every rank when any rank has a problem (the first one's)."""
        problems = [(r, p) for r, p in enumerate(self.gather(problem)) if p]
        if problems:
            rank, message = problems[0]
            raise error(message if rank == self.rank else f"rank {rank}: {message}")

    def barrier(self) -> None:
        if self.group is not None:
            dist.barrier(group=self.group)

    def count(self, done: int) -> int | None:
        """Add ``done`` images to the job's count; the job's count so far (None: not known)."""
        if self.store is None:
            return None
        return int(self.store.add(f"{self.key}/done", done))

    def wait_for_all(self, on_count=None) -> None:
        """Wait until every rank has called this; rank 0 reports the job's count meanwhile."""
        if self.group is None:
            return
        if self.store is not None:
            finished = int(self.store.add(f"{self.key}/finished", 1))
            while self.first and finished < self.size:
                time.sleep(0.2)
                finished = int(self.store.add(f"{self.key}/finished", 0))
                if on_count is not None:
                    on_count(self.count(0))
        self.barrier()
