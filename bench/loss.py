"""ContextrastLoss forward+backward vs a ResNet-50 forward+backward on the same batch.

B = 8, 19 classes, D = 256, embeddings at strides 4, 8, 16, 32 of a 256x512 crop, a prediction
wrong on ~10% of the pixels (shifted regions, so errors lie along edges). Runs are interleaved and
the medians compared, so the ratio is measured under the same machine load.

    python bench/loss.py [--device cuda] [--repeats 5]
"""
import argparse, statistics, time

import torch
import torch.nn.functional as F
import torchvision

from contextrast.loss import ContextrastLoss, SegCELoss


def batch(device, B=8, C=19, D=256, H=256, W=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    # blocky street-like labels: horizontal bands and rectangles
    labels = torch.randint(0, C, (B, H // 32, W // 32), generator=g)
    labels = labels.repeat_interleave(32, 1).repeat_interleave(32, 2)
    labels[:, :8] = 255
    pred = torch.roll(labels, shifts=(3, 5), dims=(1, 2)).clamp(max=C - 1)
    logits = (F.one_hot(pred, C).permute(0, 3, 1, 2).float() * 4)[..., ::4, ::4].contiguous()
    logits = logits + 0.1 * torch.randn(logits.shape, generator=g)
    embs = [F.normalize(torch.randn(B, D, H // s, W // s, generator=g), dim=1) for s in (4, 8, 16, 32)]
    to = lambda t: t.to(device)
    return to(logits).requires_grad_(True), [to(e).requires_grad_(True) for e in embs], to(labels)


def sync(device):
    if device.type == "cuda": torch.cuda.synchronize()


def timed(fn, device):
    sync(device); t = time.perf_counter(); fn(); sync(device)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    device = torch.device(args.device)
    logits, embs, labels = batch(device)
    loss_fn = ContextrastLoss(19).to(device)
    ce_fn = SegCELoss(19).to(device)
    net = torchvision.models.resnet50().to(device)
    x = torch.randn(8, 3, 256, 512, device=device)

    def contextrast_step():
        out = loss_fn(logits, embs, labels)
        out["total"].backward()

    def ce_step():
        ce_fn(logits, embs, labels)["total"].backward()

    def backbone_step():
        net(x).sum().backward()

    for f in (contextrast_step, ce_step, backbone_step): f()          # warm-up
    times = {"contextrast": [], "ce": [], "resnet50": []}
    for _ in range(args.repeats):
        times["contextrast"].append(timed(contextrast_step, device))
        times["ce"].append(timed(ce_step, device))
        times["resnet50"].append(timed(backbone_step, device))
    med = {k: statistics.median(v) for k, v in times.items()}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; medians of {args.repeats} interleaved runs")
    print(f"{'step':>12} {'median s':>9} {'min s':>8} {'max s':>8}")
    for k, v in times.items():
        print(f"{k:>12} {med[k]:9.3f} {min(v):8.3f} {max(v):8.3f}")
    print(f"ContextrastLoss / ResNet-50 step: {med['contextrast'] / med['resnet50']:.3f}")
    print(f"(ContextrastLoss - CE) / ResNet-50 step: {(med['contextrast'] - med['ce']) / med['resnet50']:.3f}")


if __name__ == "__main__":
    main()
