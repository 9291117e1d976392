"""Data-parallel helpers: a real two-process gloo group on CPU."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from t2i.training.distributed import DistributedContext, setup_distributed


def _worker(rank: int, store: str, results) -> None:
    # a file rendezvous: no TCP port that a concurrent test (torchrun) could also pick
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    os.environ.update(RANK=str(rank), WORLD_SIZE="2")
    ctx = setup_distributed("cpu")
    try:
        value = ctx.share(0.25 if rank == 0 else 0.75)  # both ranks get rank 0's 0.25
        torch.manual_seed(0)
        same = torch.nn.Linear(3, 2)
        ctx.check_in_sync(same)
        torch.manual_seed(rank)
        other = torch.nn.Linear(3, 2)
        try:
            ctx.check_in_sync(other)
            diverged = None
        except RuntimeError as error:
            diverged = str(error)
        results.put((rank, value, diverged))
    finally:
        ctx.close()


def test_ranks_agree_and_divergence_is_caught(tmp_path):
    queue = mp.get_context("spawn").SimpleQueue()
    store = str(tmp_path / "rendezvous")
    mp.start_processes(_worker, args=(store, queue), nprocs=2, start_method="spawn")
    results = sorted(queue.get() for _ in range(2))
    assert [r[1] for r in results] == [0.25, 0.25]
    assert all(r[2] is not None and "diverged" in r[2] for r in results)


def test_single_process_context_is_free(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = setup_distributed("cpu")
    assert ctx == DistributedContext(device=torch.device("cpu")) and ctx.is_main
    module = torch.nn.Linear(2, 2)
    assert ctx.wrap(module) is module and ctx.share(0.5) == 0.5
    ctx.check_in_sync(module)
    ctx.barrier()


def test_more_processes_than_gpus_is_a_clear_error(monkeypatch):
    if not torch.cuda.is_available():
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", str(torch.cuda.device_count()))
    with pytest.raises(RuntimeError, match="--nproc_per_node"):
        setup_distributed("cuda")
