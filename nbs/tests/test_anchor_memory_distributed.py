"""Two CPU processes (gloo), each with half of every batch, push the same anchors and hold identical memories."""

import torch
import torch.distributed as dist
import torch.nn.functional as F

from contextrast.anchors import class_anchors
from contextrast.anchor_memory import AnchorMemory, class_prioritised_anchors

from _ddp import init_gloo, run_two_ranks

C, B, D, H, W, STEPS = 4, 4, 8, 8, 8, 5


def _batches():
    g = torch.Generator().manual_seed(0)
    for _ in range(STEPS):
        e = [F.normalize(torch.randn(B, D, H // s, W // s, generator=g), dim=1) for s in (1, 2)]
        yield e, torch.randint(0, C, (B, H, W), generator=g)


def _memory(rank=0, world=1):
    mem = AnchorMemory(C, D, size=3)
    sl = slice(rank * B // world, (rank + 1) * B // world)
    for e, labels in _batches():
        per_layer = [class_anchors(x[sl], labels[sl], C)[:2] for x in e]
        mem.push(*class_prioritised_anchors(per_layer))
    return mem.state_dict()


def _worker(rank, world, port, out):
    init_gloo(rank, world, port)
    try: out[rank] = {k: v.clone() for k, v in _memory(rank, world).items()}
    finally: dist.destroy_process_group()


def test_two_ranks_hold_the_memory_of_the_global_batches():
    whole = _memory()
    out = run_two_ranks(_worker)
    states = [out[r] for r in range(2)]
    for state in states:
        assert torch.equal(state["filled"], whole["filled"]) and torch.equal(state["head"], whole["head"])
        torch.testing.assert_close(state["queue"], whole["queue"], rtol=0, atol=1e-6)
    assert torch.equal(states[0]["queue"], states[1]["queue"])
