"""Two CPU processes (gloo), each with half of a batch, hold exactly the anchors of the whole batch."""

import torch
import torch.distributed as dist
import torch.nn.functional as F

from contextrast.anchors import class_anchors

from _ddp import init_gloo, run_two_ranks

C, B, D, H, W = 5, 4, 8, 12, 12


def _batch():
    g = torch.Generator().manual_seed(0)
    e = F.normalize(torch.randn(B, D, H // 2, W // 2, generator=g), dim=1)
    labels = torch.randint(0, C - 1, (B, H, W), generator=g)   # class C-1 absent everywhere
    labels[:B // 2, :, :3] = 255
    labels[B // 2:, 0, 0] = 0
    weights = torch.randn(C, D, generator=g)
    return e, labels, weights


def _loss(A, present, weights):
    # a loss whose gradient depends on every present anchor
    return (A * weights)[present].sum()


def _worker(rank, world, port, out):
    init_gloo(rank, world, port)
    try:
        e, labels, weights = _batch()
        sl = slice(rank * B // world, (rank + 1) * B // world)
        e_local = e[sl].clone().requires_grad_(True)
        A, present, counts = class_anchors(e_local, labels[sl], C)
        # DDP averages parameter gradients over ranks: the global loss is the mean of the ranks' losses
        (_loss(A, present, weights) / world).backward()
        out[rank] = (A.detach(), present, counts, e_local.grad)
    finally:
        dist.destroy_process_group()


def test_two_ranks_hold_the_global_anchors_and_gradients():
    e, labels, weights = _batch()
    e_full = e.clone().requires_grad_(True)
    A, present, counts = class_anchors(e_full, labels, C)
    _loss(A, present, weights).backward()

    out = run_two_ranks(_worker)
    results = [out[r] for r in range(2)]
    for rank, (A_r, present_r, counts_r, grad_r) in enumerate(results):
        assert torch.equal(present_r, present) and not present[-1]
        assert torch.equal(counts_r, counts)
        torch.testing.assert_close(A_r, A.detach(), rtol=0, atol=1e-6)
        sl = slice(rank * B // 2, (rank + 1) * B // 2)
        torch.testing.assert_close(grad_r, e_full.grad[sl], rtol=1e-5, atol=1e-6)
