"""The driver's check that every rank runs the same number of micro-batches, on two real gloo processes.

Kept apart from the training tests: the spawned ranks import this module, so it imports only what they need
(the OmniBal and preference modules would cost each rank seconds of imports on 2 cores)."""

from __future__ import annotations

import os

import torch.distributed as dist
import torch.multiprocessing as mp

from rayflow.train.loop import check_equal_across_ranks
from tests.conftest import free_port

CASES = ([7, 7], [7, 6])  # per-rank micro-batch counts: equal, then one short


def _count_worker(rank: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        for case, counts in enumerate(CASES):
            try:
                check_equal_across_ranks(counts[rank], "the number of micro-batches in epoch 0")
                results.put((case, rank, "ok"))
            except RuntimeError as err:
                results.put((case, rank, str(err)))
    finally:
        dist.destroy_process_group()


def test_batch_count_all_reduce_catches_a_mismatch_on_every_rank():
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    mp.start_processes(_count_worker, args=(free_port(), results), nprocs=2, start_method="spawn")
    out = {(case, rank): msg for case, rank, msg in (results.get(timeout=30) for _ in range(4))}
    assert out[0, 0] == out[0, 1] == "ok"
    for rank in (0, 1):
        msg = out[1, rank]
        assert "ranks disagree on the number of micro-batches" in msg and "between 6 and 7" in msg
