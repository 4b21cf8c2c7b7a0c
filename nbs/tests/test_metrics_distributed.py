"""Two CPU processes (gloo), each with half of a batch, hold the whole batch's metric counts after `all_reduce`."""

import torch
import torch.distributed as dist

from contextrast.metrics import BoundaryIoU, ConfusionMatrix, InstanceIoU, ObjectScaleIoU

from _ddp import init_gloo, run_two_ranks

C, B, H, W = 19, 4, 24, 32


def _batch():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, C - 1, (B, H // 4, W // 4), generator=g).repeat_interleave(4, 1).repeat_interleave(4, 2)
    labels[torch.rand(B, H, W, generator=g) < 0.05] = 255          # class C-1 is never labelled
    pred = torch.where(torch.rand(B, H, W, generator=g) < 0.7, labels, torch.randint(0, C, (B, H, W), generator=g))
    pred[pred == 255] = 0
    instances = torch.full((B, H, W), 7)
    instances[:, 4:12, 4:16] = 26000                                # one car per image
    instances[1:, 14:20, 20:23] = 24003                             # and a person in three of them
    labels[:, 4:12, 4:16], labels[1:, 14:20, 20:23] = 13, 11
    return pred, labels, instances


def _metrics():
    # object-scale bounds small enough that this batch's 4x4 blocks, its cars and its persons fall in different groups
    return [ConfusionMatrix(C), BoundaryIoU(C, (1, 3)), BoundaryIoU(C, (2,), mode="trimap"), InstanceIoU(),
            ObjectScaleIoU(C, areas=(16, 40, 96))]


def _update(metrics, pred, labels, instances):
    for m in metrics:
        m.update(pred, labels, instances) if isinstance(m, InstanceIoU) else m.update(pred, labels)
    return metrics


def _worker(rank, world, port, out):
    torch.set_num_threads(1)   # two ranks share the machine's cores
    init_gloo(rank, world, port)
    try:
        sl = slice(rank * B // world, (rank + 1) * B // world)
        metrics = _update(_metrics(), *(t[sl] for t in _batch()))
        out[rank] = [[s.clone() for s in m.all_reduce().state] for m in metrics]
    finally:
        dist.destroy_process_group()


def test_two_ranks_hold_the_single_process_counts():
    whole = _update(_metrics(), *_batch())
    out = run_two_ranks(_worker)
    results = [out[r] for r in range(2)]
    for states in results:
        for m, state in zip(whole, states):
            for want, got in zip(m.state, state):
                if want.dtype.is_floating_point: torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
                else: assert torch.equal(got, want)
    assert whole[0].matrix.sum() > 0 and whole[3].state[1].sum() > 0
    objects = whole[4].state[1].sum(1)                              # objects per scale group
    assert (objects > 0).sum() >= 2, objects
