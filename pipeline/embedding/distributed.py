"""Ranks of a torchrun launch: which shards each rank embeds, and agreeing on success.

`torchrun --nproc-per-node N -m pipeline embed ...` starts N copies of the command with
RANK, WORLD_SIZE and LOCAL_RANK set (plus MASTER_ADDR/MASTER_PORT for the rendezvous).
Without them the process is rank 0 of 1 and torch.distributed is never touched.

The corpus's byte ranges are split between the ranks in corpus order (`share`): each rank
reads, tokenizes and embeds only its own ranges, into the shared cache directory; the
ranks exchange only small objects (range counts, shard lists). Rank 0 alone locks the
cache, refuses other inputs, and writes the manifest once every rank has finished.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, TypeVar

import torch
import torch.distributed as dist

from pipeline.errors import PipelineError

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def primary(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def from_env() -> Ranks:
    """This process's place in a torchrun launch (rank 0 of 1 when not launched by torchrun)."""
    try:
        ranks = Ranks(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                      int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise PipelineError("RANK, WORLD_SIZE and LOCAL_RANK must be integers; launch several "
                            "processes with torchrun --nproc-per-node N -m pipeline ...") from None
    if not 0 <= ranks.rank < ranks.world_size:
        raise PipelineError(f"RANK={ranks.rank} is not below WORLD_SIZE={ranks.world_size}")
    return ranks


def rank_device(device: str, ranks: Ranks) -> str:
    """Each rank on its own GPU (cuda:LOCAL_RANK); ranks on CPU share the CPU."""
    if ranks.distributed and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{ranks.local_rank}"
    return device


def start(ranks: Ranks) -> None:
    """Join the process group. gloo, on GPUs too: ranks exchange only small Python objects,
    never tensors, and gloo needs no device."""
    if ranks.distributed and not dist.is_initialized():
        dist.init_process_group("gloo")


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def share(n_units: int, ranks: Ranks) -> range:
    """This rank's work units (byte ranges, in corpus order): a contiguous run, the runs of
    all ranks differing in length by at most one. Deterministic; each unit goes to one rank."""
    return range(n_units * ranks.rank // ranks.world_size,
                 n_units * (ranks.rank + 1) // ranks.world_size)


def _agree(ranks: Ranks, error: str | None) -> None:
    """A barrier that carries failures: raise on every rank when any rank failed."""
    errors: list[str | None] = [None] * ranks.world_size
    dist.all_gather_object(errors, error)
    failed = [(rank, message) for rank, message in enumerate(errors) if message]
    if failed and error is None:
        rank, message = failed[0]
        raise PipelineError(f"rank {rank} failed: {message}")


def everywhere(ranks: Ranks, step: Callable[[], T]) -> T:
    """Run `step` on every rank and wait for all; a PipelineError on one rank stops them all
    (each failing rank raises its own error, the others name it)."""
    if not ranks.distributed:
        return step()
    try:
        result = step()
    except PipelineError as err:
        _agree(ranks, str(err))
        raise
    _agree(ranks, None)
    return result


def on_primary(ranks: Ranks, step: Callable[[], T]) -> T | None:
    """Run `step` on rank 0 only while the others wait; its result there, None elsewhere."""
    return everywhere(ranks, step if ranks.primary else lambda: None)


def gather(ranks: Ranks, value: T) -> list[T]:
    """Every rank's `value`, in rank order, on every rank."""
    if not ranks.distributed:
        return [value]
    values: list = [None] * ranks.world_size
    dist.all_gather_object(values, value)
    return values
