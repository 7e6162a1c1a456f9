"""Training on many processes: the process group torchrun describes, and the few collectives the
trainer needs.

``torchrun --nproc_per_node N cli.py train ...`` starts N copies of the command and gives each one
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT`` (PyTorch docs, "torchrun (Elastic Launch)"). :func:`init_from_env` reads them and
joins the group: gloo for CPU ranks, NCCL for CUDA ranks (one GPU per process, ``cuda:LOCAL_RANK``),
as ``torch.distributed``'s backend guide recommends. Without those variables (a plain ``python
cli.py train``) it returns the single-process :class:`DistInfo` and every collective here is a
no-op, so the trainer has one code path.

Rank 0 decides what needs a clock or a validation score (the time-budget plan, the best
checkpoint) and broadcasts the decision: every rank must run the same number of steps, or DDP's
gradient all-reduce waits forever.
"""
from __future__ import annotations

import datetime
import gc
import hashlib
import os
import socket
from dataclasses import dataclass
from typing import Callable, TypeVar

import torch

from .errors import UnetEdgeError, UsageError

T = TypeVar("T")

#: how long a rank waits in a collective for the others (rank 0 validates alone meanwhile).
COLLECTIVE_TIMEOUT_S = 3600
#: the environment torchrun sets for every worker.
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


class PeerFailedError(UnetEdgeError):
    """Another rank failed a step every rank runs together; this rank stops with the same exit code.

    ``exit_code`` is the failing rank's (an instance attribute here, not the class's)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the training group.

    ``rank`` in [0, ``world_size``), ``local_rank`` in [0, ``local_world_size``) (the processes of
    this node), ``backend`` ``gloo``/``nccl``, or None for a single process (no group)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        """Whether a process group is up (collectives communicate)."""
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, locks the run folder and writes every file."""
        return self.rank == 0

    def to_dict(self) -> dict:
        return {"rank": self.rank, "world_size": self.world_size, "local_rank": self.local_rank,
                "local_world_size": self.local_world_size, "backend": self.backend}

    # -- collectives: no-ops for a single process ------------------------------------------------
    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` (any picklable value made by this program) on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: T) -> list[T]:
        """Every rank's ``obj``, indexed by rank, on every rank."""
        if not self.enabled:
            return [obj]
        out: list = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks (float64 on the CPU: gloo and NCCL both reduce it)."""
        if not self.enabled:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64,
                         device=f"cuda:{self.local_rank}" if self.backend == "nccl" else "cpu")
        torch.distributed.all_reduce(t)
        return float(t.item()) / self.world_size

    def average_buffers(self, module: torch.nn.Module) -> None:
        """Make every rank's buffers of ``module`` equal: floating ones (BatchNorm running mean and
        variance) averaged over the ranks, the others (``num_batches_tracked``) rank 0's. timm's
        ``distribute_bn(reduce=True)`` does the same between epochs."""
        if not self.enabled:
            return
        with torch.no_grad():
            for b in module.buffers():
                if b.is_floating_point():
                    torch.distributed.all_reduce(b)
                    b.div_(self.world_size)
                else:
                    torch.distributed.broadcast(b, src=0)

    def agree(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on every rank; when it raised on any rank, raise on every rank.

        The failing rank re-raises its own exception; the others raise :class:`PeerFailedError`
        naming the first failing rank and its message, with its exit code. So a usage error found
        by rank 0 (a folder holding a run, say) stops the whole group at once, instead of leaving
        the other ranks waiting in the next collective until the timeout.
        """
        err, result = None, None
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - re-raised below, on this rank and as PeerFailedError on the others
            err = e
        if not self.enabled:
            if err is not None:
                raise err
            return result
        report = None if err is None else (type(err).__name__, str(err).splitlines()[0] if str(err) else "",
                                           int(getattr(err, "exit_code", 1)))
        reports = self.gather(report)
        if err is not None:
            raise err
        for rank, r in enumerate(reports):
            if r is not None:
                raise PeerFailedError(f"rank {rank} stopped the run ({r[0]}): {r[1]}", r[2])
        return result


def _env_int(name: str) -> int:
    text = os.environ.get(name, "")
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"environment variable {name}={text!r} is not an integer; launch with torchrun, which sets "
                         "RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE") from None


def env_dist() -> DistInfo:
    """The group torchrun's environment describes, not yet joined (``backend`` None).

    Raises:
        UsageError: ``WORLD_SIZE`` > 1 without the other variables, or values out of range.
    """
    if "WORLD_SIZE" not in os.environ or _env_int("WORLD_SIZE") <= 1:
        return DistInfo()
    missing = [v for v in TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise UsageError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set; launch with "
                         "torchrun --nproc_per_node N cli.py train ... (it sets all of them)")
    info = DistInfo(*(_env_int(v) for v in TORCHRUN_VARS))
    if not (0 <= info.rank < info.world_size and 0 <= info.local_rank < info.local_world_size <= info.world_size):
        raise UsageError(f"inconsistent torchrun environment {info.to_dict()}")
    return info


def init_from_env(device: str) -> tuple[DistInfo, str]:
    """Join the group of :func:`env_dist` for a run on ``device`` (``cpu`` or ``cuda``/``cuda:N``).

    Returns the joined :class:`DistInfo` and the device of this rank: ``cpu``, or
    ``cuda:LOCAL_RANK`` (one GPU per process). A single process returns ``(DistInfo(), device)``.

    Raises:
        UsageError: a bad torchrun environment; ``cuda:N`` given to several processes (each takes
        its own GPU); fewer GPUs on this node than processes.
        BackendUnavailableError: torch built without the needed backend (``gloo`` or ``nccl``).
    """
    from .errors import BackendUnavailableError

    info = env_dist()
    if info.world_size <= 1:
        return info, device
    cuda = device.startswith("cuda")
    if cuda:
        if ":" in device:
            raise UsageError(f"--device {device}: under torchrun each process takes the GPU of its LOCAL_RANK; "
                             "give --device cuda (or auto) and pick GPUs with CUDA_VISIBLE_DEVICES")
        if torch.cuda.device_count() < info.local_world_size:
            raise UsageError(f"{info.local_world_size} processes on this node but {torch.cuda.device_count()} CUDA "
                             "device(s); use --nproc_per_node <= the GPU count")
        device = f"cuda:{info.local_rank}"
        torch.cuda.set_device(device)
    backend = "nccl" if cuda else "gloo"
    available = torch.distributed.is_available() and (
        torch.distributed.is_nccl_available() if cuda else torch.distributed.is_gloo_available())
    if not available:
        raise BackendUnavailableError(f"this torch build has no {backend} backend for distributed training; "
                                      "train in one process (python cli.py train ...)")
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend, timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    return DistInfo(info.rank, info.world_size, info.local_rank, info.local_world_size, backend), device


def shutdown(info: DistInfo, *, wait_for_peers: bool = False) -> None:
    """Leave the group (what ``init_from_env`` joined); nothing for a single process.

    ``wait_for_peers``: meet every rank in a barrier first, so all of them tear gloo's connections
    down together. Without it a rank that finished early (rank 1, while rank 0 still fits the logit
    offsets and writes the summary) destroyed its group under a peer still connected to it, and
    once in five CI runs aborted at exit in C++ (``terminate called without an active exception``,
    exit -6). Only for a run that ended well: after an error a peer may never reach the barrier.

    The same abort was seen once more with the barrier (a resumed run, 2026-12-07), so a garbage
    collection before and after leaving now frees what may still hold the group in reference cycles
    (the ``DistributedDataParallel`` wrapper and its reducer): ``destroy_process_group`` drops only
    ``torch.distributed``'s own references (PyTorch PR #96017), and a group torn down during
    interpreter finalization can abort in gloo's threads (PR #179291). A likely cause, not a proven one.
    """
    if info.enabled and torch.distributed.is_initialized():
        if wait_for_peers:
            torch.distributed.barrier()
        gc.collect()
        torch.distributed.destroy_process_group()
        gc.collect()


def rank_threads(physical_threads: int, info: DistInfo) -> int:
    """CPU threads for one rank when the user gave none: the node's ``physical_threads`` shared
    among its ``local_world_size`` processes (at least 1), so N ranks do not oversubscribe the cores."""
    return max(1, physical_threads // max(1, info.local_world_size))


def rank_identity(info: DistInfo) -> dict:
    """``{"rank", "pid", "host"}`` of this process (for the summary's per-rank record)."""
    return {"rank": info.rank, "pid": os.getpid(), "host": socket.gethostname()}


def state_dict_sha256(state: dict) -> str:
    """SHA-256 over a state dict: every entry's name, dtype, shape and bytes, in order (hex str).

    Two ranks holding the same weights and buffers give the same digest; any differing value
    changes it."""
    h = hashlib.sha256()
    for name, t in state.items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
