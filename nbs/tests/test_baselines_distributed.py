"""Two CPU processes (gloo), each with half of a batch: the peers' memories are the same on every rank."""

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from contextrast.anchors import class_anchors
from contextrast.baselines import ContrastiveSegLoss, RegionContrastLoss

from _ddp import init_gloo, run_two_ranks

C, B, D, H = 4, 4, 8, 16


def _batch():
    g = torch.Generator().manual_seed(0)
    e = F.normalize(torch.randn(B, D, H // 2, H // 2, generator=g), dim=1)
    labels = torch.randint(0, C - 1, (B, H, H), generator=g)     # class C-1 absent everywhere
    labels[:, :2] = 255
    labels[2:, 4:8] = 0                                            # class 0 on both ranks
    logits = torch.randn(B, C, H // 2, H // 2, generator=g)
    return e, labels, logits


def _losses():
    # every pixel of every (image, class) enters the pixel queue, so its content is not random
    seg = ContrastiveSegLoss(C, embed_dim=D, min_views=1, memory_size=256, pixel_update_freq=10**4)
    return seg, RegionContrastLoss(C, embed_dim=D, memory_size=8)


def _worker(rank, world, port, out):
    init_gloo(rank, world, port)
    try:
        e, labels, logits = _batch()
        sl = slice(rank * B // world, (rank + 1) * B // world)
        seg, region = _losses()
        for loss in (seg, region):
            for _ in range(2):
                loss(logits[sl], [e[sl].clone().requires_grad_(True)], labels[sl])["total"].backward()
        out[rank] = ({k: v.clone() for k, v in seg.state_dict().items()},
                     {k: v.clone() for k, v in region.state_dict().items()})
    finally:
        dist.destroy_process_group()


def _rows(t):
    "Rows of a 2-d array in lexicographic order (a multiset comparison)."
    t = t.numpy()
    return t[np.lexsort(t.T[::-1])]


def test_two_ranks_hold_the_same_banks_and_centres():
    out = run_two_ranks(_worker)
    results = [out[r] for r in range(2)]
    (seg0, reg0), (seg1, reg1) = results
    for k in seg0: assert torch.equal(seg0[k], seg1[k]), k
    for k in reg0: assert torch.equal(reg0[k], reg1[k]), k

    e, labels, logits = _batch()
    y = F.interpolate(labels[:, None].float(), size=(H // 2, H // 2), mode="nearest")[:, 0].long()
    for c in range(C):
        images = [b for b in range(B) if (y[b] == c).any()]
        # two steps, every image of the whole batch in rank order each time, class 0 included
        assert int(seg0["segment_len"][c]) == 2 * len(images)
        means = [F.normalize(e[b][:, y[b] == c].mean(1), dim=0) for b in images]
        if images:
            torch.testing.assert_close(seg0["segment_queue"][c, :2 * len(images)], torch.stack(means * 2))
        pixels = [e[b][:, y[b] == c].t() for b in images]
        n = sum(len(p) for p in pixels)
        assert int(seg0["pixel_len"][c]) == 2 * n and int(seg0["pixel_ptr"][c]) == (2 * n) % 256
        if images:
            torch.testing.assert_close(_rows(seg0["pixel_queue"][c, :n]), _rows(torch.cat(pixels)))
    assert int(seg0["segment_len"][C - 1]) == 0 and int(seg0["segment_len"][0]) > 0

    # the region memory is the one a single process computes on the whole batch, twice: the centres of
    # the classes the whole batch predicts, one per class and step
    region = RegionContrastLoss(C, embed_dim=D, memory_size=8)
    for _ in range(2): region(logits, [e], labels)
    torch.testing.assert_close(reg0["queue"], region.queue)
    assert torch.equal(reg0["queue_len"], region.queue_len) and torch.equal(reg0["queue_ptr"], region.queue_ptr)
    predicted = torch.bincount(logits.argmax(1).reshape(-1), minlength=C) > 0
    assert region.queue_len.tolist() == (2 * predicted.long()).tolist()
