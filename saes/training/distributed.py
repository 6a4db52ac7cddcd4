"""torch.distributed for SAE training: data parallel and hook sharding (NCCL on GPUs, gloo on CPU).

Launched by ``torchrun`` (which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT);
``init_from_env`` turns that into a :class:`Comm`, or returns None for a plain single process.

Data parallel (default): every rank holds every SAE. Each global batch of ``batch_tokens`` rows is
cut into one contiguous slice per rank. The batch-level statistics of the losses (the FVU
denominator sum ||x - mean||^2 and row means) are all-reduced while the loss is built
(the trainer passes its :class:`Comm` to the variant, which passes it to the loss helpers below), each rank's loss is its share of the *global* loss, and gradients are summed
across ranks; so the update is the one a single process would make on the whole batch (tested
against one process). Decoder renormalisation then runs on identical weights on every rank, and the
dead-latent counters use the union of the latents that fired on any rank.

Hook sharding (``shard_hooks``): each rank owns the SAEs of some hooks and receives those hooks'
activations from the other ranks (each rank captures its own windows); no gradient traffic.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence

import torch
import torch.distributed as dist


class Comm:
    """The process group as the trainer sees it: rank, world size and the collectives it uses."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        if not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialised (launch with torchrun)")
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", self.rank))
        self.backend = dist.get_backend()
        # NCCL moves CUDA tensors only; gloo moves CPU tensors
        self.device = (
            torch.device(device)
            if self.backend != "nccl"
            else torch.device("cuda", torch.cuda.current_device())
        )

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def row_slice(self, n: int, rank: int | None = None) -> slice:
        """This rank's contiguous share of ``n`` rows (sizes differ by at most one)."""
        r = self.rank if rank is None else rank
        return slice(r * n // self.world, (r + 1) * n // self.world)

    def _on(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device) if t.device != self.device else t

    def all_reduce_sum_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Sum tensors across ranks in place (one flat buffer per dtype: one collective, not many)."""
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for t in tensors:
            by_dtype.setdefault(t.dtype, []).append(t)
        for group in by_dtype.values():
            flat = self._on(torch.cat([t.reshape(-1) for t in group]))
            dist.all_reduce(flat)
            offset = 0
            for t in group:
                t.copy_(flat[offset : offset + t.numel()].view_as(t))
                offset += t.numel()

    def sum(self, values: Sequence[float]) -> list[float]:
        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def any(self, flag: bool) -> bool:
        return self.sum([float(flag)])[0] > 0

    def union_(self, mask: torch.Tensor) -> torch.Tensor:
        """Elementwise OR of a boolean mask across ranks."""
        t = self._on(mask.to(torch.uint8))
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.to(mask.device).bool()

    def broadcast_(self, tensors: Sequence[torch.Tensor], src: int = 0) -> None:
        for t in tensors:
            buf = self._on(t.detach())
            dist.broadcast(buf, src)
            if buf is not t:
                t.data.copy_(buf)

    def _sizes(self, n: int) -> list[int]:
        sizes = [torch.zeros(1, dtype=torch.long, device=self.device) for _ in range(self.world)]
        dist.all_gather(sizes, torch.tensor([n], dtype=torch.long, device=self.device))
        return [int(s.item()) for s in sizes]

    def all_gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        """Rows of every rank, concatenated in rank order (ranks may hold different row counts)."""
        sizes = self._sizes(t.shape[0])
        top = max(max(sizes), 1)
        padded = self._on(t).new_zeros((top, *t.shape[1:]))
        padded[: t.shape[0]] = self._on(t)
        out = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(out, padded)
        return torch.cat([o[:s] for o, s in zip(out, sizes)]).to(t.device)

    def gather_rows(self, t: torch.Tensor, dst: int) -> torch.Tensor | None:
        """Rows of every rank concatenated in rank order on ``dst``; None on the other ranks."""
        sizes = self._sizes(t.shape[0])
        top = max(max(sizes), 1)
        padded = self._on(t).new_zeros((top, *t.shape[1:]))
        padded[: t.shape[0]] = self._on(t)
        out = [torch.empty_like(padded) for _ in range(self.world)] if self.rank == dst else None
        dist.gather(padded, out, dst=dst)
        if out is None:
            return None
        return torch.cat([o[:s] for o, s in zip(out, sizes)]).to(t.device)

    def barrier(self) -> None:
        dist.barrier()


def init_from_env(device: str = "cpu", timeout_s: float = 1800) -> Comm | None:
    """Initialise the process group torchrun describes (NCCL for CUDA devices, else gloo).

    Returns None when WORLD_SIZE is absent or 1 (a plain single-process run).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    if not dist.is_initialized():
        cuda = str(device).startswith("cuda")
        if cuda:
            if not torch.cuda.is_available():
                raise ValueError(
                    f"device {device!r} asked for, but CUDA is not available on this rank"
                )
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(
            "nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s)
        )
    return Comm()


def rank_device(device: str, comm: Comm | None) -> str:
    """One GPU per rank: "cuda" becomes "cuda:<LOCAL_RANK>" under torchrun."""
    if comm is not None and device == "cuda":
        return f"cuda:{comm.local_rank}"
    return device


# ---- batch-level statistics inside a loss ---------------------------------------------------
# Each takes the communicator explicitly: None (one process) computes on the local rows; a Comm
# reduces over the global batch of all ranks. The trainer passes its comm to the variant's
# ``train_forward``, which passes it to these.


def centred_sum_sq(x: torch.Tensor, comm: Comm | None = None) -> torch.Tensor:
    """sum_n ||x_n - mean(x)||^2 over the batch (over all ranks' rows under ``comm``).

    Single process: exactly ``(x - x.mean(0)).pow(2).sum()``. Distributed: the statistics
    (n, sum x, sum ||x||^2) of the data x are all-reduced in float64; no gradient flows through.
    """
    if comm is None:
        return torch.linalg.vector_norm(
            x - x.mean(0)
        ).square()  # = ((x - x.mean(0))**2).sum(), faster
    xd = x.detach().double()
    pack = torch.cat([xd.new_tensor([x.shape[0]]), xd.sum(0), (xd * xd).sum().reshape(1)])
    comm.all_reduce_sum_([pack])
    n, s1, s2 = pack[0], pack[1:-1], pack[-1]
    return (s2 - s1.dot(s1) / n).to(x.dtype)


def global_sum(values: Sequence[float], comm: Comm | None = None) -> list[float]:
    """Plain numbers summed over all ranks under ``comm`` (themselves without one)."""
    if comm is None:
        return [float(v) for v in values]
    return comm.sum(values)


def global_rows(n_local: int, comm: Comm | None = None) -> int:
    """Rows in the whole batch (all ranks under ``comm``)."""
    if comm is None:
        return n_local
    return int(comm.sum([n_local])[0])


def row_mean_of_data(x: torch.Tensor, comm: Comm | None = None) -> torch.Tensor:
    """Mean over the rows of the global batch of a data tensor (no gradient flows through)."""
    if comm is None:
        return x.mean(0)
    pack = torch.cat(
        [x.detach().double().sum(0).reshape(-1), x.new_tensor([x.shape[0]], dtype=torch.float64)]
    )
    comm.all_reduce_sum_([pack])
    return (pack[:-1] / pack[-1]).to(x.dtype).reshape(x.shape[1:])


def loss_mean(per_row: torch.Tensor, comm: Comm | None = None) -> torch.Tensor:
    """This rank's share of the global-batch mean of a per-row loss term: sum(local) / N_global.

    Summing the shares' gradients over ranks (what the trainer does) gives the mean's gradient.
    """
    if comm is None:
        return per_row.mean()
    return per_row.sum() / global_rows(per_row.shape[0], comm)
