"""Host syncs of one training step of each loss, counted on the CPU (bench/syncs.py): the operators that would stall a GPU's queue."""
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from syncs import HostSyncs  # noqa: E402

from contextrast.loss import build_loss  # noqa: E402

BUDGET = {"ce": 1, "contextrast": 8, "contextrast_pp": 10}


def batch(C, errors, seed=0, B=4, H=64, W=96, D=32):
    "Blocky labels; logits that predict them except on a share `errors` of 8×8 blocks; four L2-normalised layers."
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, C, (B, H // 8, W // 8), generator=g)
    wrong = torch.rand(labels.shape, generator=g) < errors
    pred = torch.where(wrong, (labels + torch.randint(1, C, labels.shape, generator=g)) % C, labels)
    up = lambda t, s: t.repeat_interleave(s, -2).repeat_interleave(s, -1)
    labels = up(labels, 8)
    labels[:, :3, :5] = 255                                                   # some ignored pixels
    logits = (4 * F.one_hot(up(pred, 2), C).permute(0, 3, 1, 2).float()
              + 0.1 * torch.randn(B, C, H // 4, W // 4, generator=g)).requires_grad_()
    embs = [F.normalize(torch.randn(B, D, H // s, W // s, generator=g), dim=1).requires_grad_() for s in (4, 8, 16, 32)]
    return logits, embs, labels


@pytest.mark.parametrize("name", ["ce", "contextrast", "contextrast_pp"])
@pytest.mark.parametrize("C", [11, 40])
def test_host_syncs_per_step(name, C):
    loss = build_loss(name, C, **({"embed_dim": 32, "memory_size": 20} if name == "contextrast_pp" else {}))
    if name == "contextrast_pp": loss.memory.batched = True          # the draw a GPU makes by default
    seen = []
    for step, errors in enumerate([0.0, 0.02, 0.3, 1.0, 0.5]):        # no errors, a few, many, all
        logits, embs, labels = batch(C, errors, seed=step)
        with HostSyncs() as syncs:
            loss(logits, embs, labels)["total"].backward()
        seen.append((errors, syncs.total, dict(syncs.counts)))
    assert max(t for _, t, _ in seen) <= BUDGET[name], seen


def test_counter_sees_syncs():
    x = torch.tensor([0, 3, 0, 1])
    with HostSyncs() as syncs:
        x.nonzero(); torch.bincount(x); x[x > 0]; int(x.sum()); torch.unique(x)
    assert dict(syncs.counts) == {"nonzero": 1, "bincount": 1, "bool_mask_index": 1, "item": 1, "unique": 1}
