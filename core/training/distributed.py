"""Data-parallel training across the processes ``torchrun`` starts (one per GPU).

``torchrun --nproc_per_node N -m t2i.cli.main train FAMILY ...`` sets ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`setup_distributed` reads them, joins the process
group (NCCL on CUDA, gloo on CPU) and pins each process to its GPU. Without those variables it
returns a single-process :class:`DistributedContext` whose methods cost nothing, so the
training loop (:func:`t2i.training.train`) has one code path. Gradients are averaged by
``DistributedDataParallel``; decisions taken from a clock (the ``--minutes`` deadline) are
made by rank 0 and broadcast, so no rank leaves the loop while the others wait in an
all-reduce.
"""

from __future__ import annotations

import os

import attrs
import torch
import torch.distributed as dist


class DistributedSetupError(RuntimeError):
    """The launch environment is inconsistent; the message says what to change."""


@attrs.frozen
class DistributedContext:
    """Where this process sits in the job: ``rank`` of ``world_size``, on ``device``."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = attrs.field(factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` under DistributedDataParallel (itself when single-process)."""
        if not self.distributed:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def share(self, value: float) -> float:
        """Rank 0's ``value``, on every rank (a collective: all ranks must call it)."""
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(tensor, src=0)
        return float(tensor.item())

    def check_in_sync(self, *modules: torch.nn.Module) -> None:
        """Raise if the parameters of ``modules`` differ between ranks (a collective)."""
        if not self.distributed:
            return
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for module in modules:
            for p in module.parameters():
                total += p.detach().double().sum()
        values = [torch.zeros_like(total) for _ in range(self.world_size)]
        dist.all_gather(values, total)
        if any(not torch.equal(v, values[0]) for v in values):
            sums = [float(v) for v in values]
            raise RuntimeError(f"data-parallel ranks diverged: parameter sums {sums}")

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def setup_distributed(device: str | None = None) -> DistributedContext:
    """The context of this process; joins the process group when launched by ``torchrun``.

    Args:
        device: ``"cpu"``, ``"cuda"`` or None (CUDA when available). Under ``torchrun`` on
            CUDA, each process takes GPU ``LOCAL_RANK``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    kind = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if world_size <= 1:
        return DistributedContext(device=torch.device(kind))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if kind.startswith("cuda"):
        if local_rank >= torch.cuda.device_count():
            raise DistributedSetupError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs: start "
                "torchrun with --nproc_per_node at most the number of GPUs"
            )
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        dev, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world_size)
    return DistributedContext(rank=rank, world_size=world_size, device=dev)
