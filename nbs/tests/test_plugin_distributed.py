"""Two CPU processes (gloo) train a DDP model with the Contextrast plug-in, each on half of every batch:
`average_gradients` gives the heads the mean of the two processes' gradients and synchronised batch norms
the statistics of the whole batch, so both keep the same weights and statistics."""

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from contextrast.data import eval_transform
from contextrast.distributed import sync_batchnorm
from contextrast.plugin import Contextrast
from contextrast.toys import ToyScenes

from _ddp import init_gloo, run_two_ranks

B, STEPS, STAGES = 4, 3, ["stage1", "stage2", "stage3", "stage4"]


def _block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class _Net(nn.Module):
    def __init__(self, num_classes, w=8):
        super().__init__()
        self.stem, self.stage1, self.stage2 = _block(3, w), _block(w, w), _block(w, 2 * w)
        self.stage3, self.stage4 = _block(2 * w, 2 * w), _block(2 * w, 2 * w)
        self.classifier = nn.Conv2d(2 * w, num_classes, 1)

    def forward(self, x):
        return self.classifier(self.stage4(self.stage3(self.stage2(self.stage1(self.stem(x))))))


def _worker(rank, world, port, out):
    init_gloo(rank, world, port)
    try:
        toys = ToyScenes(B * STEPS, 64, transform=eval_transform())
        torch.manual_seed(0)
        net = _Net(toys.num_classes)
        contrast = Contextrast(net, toys.num_classes, layers=STAGES, channels=[8, 16, 16, 16], embed_dim=16,
                               max_samples=64, verbose=False)
        # batch norms synchronised as the trainer's are: the network's and the heads'
        sync_batchnorm(net, "cpu"); sync_batchnorm(contrast, "cpu")
        model = DistributedDataParallel(net)
        optimizer = torch.optim.SGD([*net.parameters(), *contrast.parameters()], lr=0.05, momentum=0.9)
        result = {}
        for step in range(STEPS):
            images, labels = map(torch.stack, zip(*[toys[step * B + i] for i in range(rank, B, world)]))
            logits = model(images)
            ce = F.cross_entropy(F.interpolate(logits, size=labels.shape[-2:], mode="bilinear"), labels, ignore_index=255)
            loss = ce + contrast(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            if step == 0: result["local"] = [p.grad.clone() for p in contrast.parameters()]
            contrast.average_gradients()
            if step == 0: result["averaged"] = [p.grad.clone() for p in contrast.parameters()]
            optimizer.step()
        result["state"] = {k: v.clone() for k, v in [*net.state_dict().items(), *contrast.state_dict().items()]}
        out[rank] = result
    finally:
        dist.destroy_process_group()


def test_two_processes_keep_the_same_weights():
    out = run_two_ranks(_worker)
    r0, r1 = out[0], out[1]
    # each process's own gradient differs (half a batch each); the averaged one is their mean
    assert any(not torch.equal(a, b) for a, b in zip(r0["local"], r1["local"]))
    for a, b, m0, m1 in zip(r0["local"], r1["local"], r0["averaged"], r1["averaged"]):
        torch.testing.assert_close(m0, (a + b) / 2, rtol=1e-5, atol=1e-7)
        assert torch.equal(m0, m1)
    bad = [k for k in r0["state"] if not torch.equal(r0["state"][k], r1["state"][k])]
    assert not bad, bad
