"""distance_transform (one multi-label transform per image) vs scipy's distance_transform_edt looped
over the B x C binary error maps.

B = 8 images, C = 19 classes, at the four layer sizes of a 512x1024 crop (128x256, 64x128, 32x64,
16x32). The error maps are those the loss sees: street-like labels at 512x1024 (large smooth
regions, 11 classes per image), a prediction at stride 4 that is the labels shifted by one pixel
with up to two classes per image grown into wrong blobs (about 6% of the pixels wrong), both
brought to each layer by class_error_maps. scipy is timed on all B x C
maps (as a per-class loss would call it) and on the non-empty maps only (a loop that skips absent
classes). Runs are interleaved and medians compared, so every ratio is measured under the same
machine load; exactness is checked on squared distances as integers.

    python bench/distance.py [--repeats 15] [--threads N] [--device cuda]
"""
import argparse, statistics, time

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from contextrast.distance import distance_transform
from contextrast.error_maps import class_error_maps
from contextrast.toys import corrupt_prediction

B, C = 8, 19
SIZES = [(128, 256), (64, 128), (32, 64), (16, 32)]


def street_batch(seed=0, H=512, W=1024, present=11):
    """Labels [B, H, W] of large smooth regions of `present` classes per image, and a stride-4
    prediction [B, H/4, W/4] wrong on ~5% of the pixels at 128x256."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(B, C, 3, 6, generator=g)
    absent = torch.rand(B, C, generator=g).argsort(1)[:, :C - present]
    noise.scatter_(1, absent[:, :, None, None].expand(-1, -1, 3, 6), -1.0)
    labels = F.interpolate(noise, size=(H, W), mode="bicubic").argmax(1)
    coarse = labels[:, ::4, ::4]
    pred = corrupt_prediction(coarse, shift=(1, 1))
    for b in range(B):  # wrong blobs: up to two classes per image grown over their neighbours
        for c in torch.randint(C, (2,), generator=g).tolist():
            grown = corrupt_prediction(coarse[b:b + 1], shift=(0, 0), grown_class=c, kernel=5)
            pred[b] = torch.where(grown[0] == c, grown[0], pred[b])
    return labels, pred


def scipy_loop(errors, nonempty_only):
    "Per-image, per-class scipy transforms assembled into one map [B, h, w]."
    out = np.zeros(errors.shape)
    for b in range(errors.shape[0]):
        classes = np.unique(errors[b][errors[b] >= 0]) if nonempty_only else range(C)
        for c in classes:
            mask = errors[b] == c
            out[b][mask] = ndimage.distance_transform_edt(mask)[mask]
    return out


def sync(device):
    if device.type == "cuda": torch.cuda.synchronize()


def timed(fn, device=torch.device("cpu")):
    sync(device); t = time.perf_counter(); out = fn(); sync(device)
    return time.perf_counter() - t, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads: torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    labels, pred = street_batch()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, "
          f"B={B}, C={C}, {args.repeats} interleaved repeats, medians")
    print(f"{'size':>9} {'errors':>7} {'ours ms':>8} {'scipy all ms':>13} {'ratio':>6} "
          f"{'scipy non-empty ms':>19} {'ratio':>6} {'exact':>6}")
    for size in SIZES:
        errors = class_error_maps(pred, labels, C, size=size)
        e_dev, e_np = errors.to(device), errors.numpy()
        distance_transform(e_dev); sync(device)                                   # warm-up
        ours, full, nonempty = [], [], []
        for _ in range(args.repeats):
            t, d = timed(lambda: distance_transform(e_dev), device); ours.append(t)
            t, ref = timed(lambda: scipy_loop(e_np, False)); full.append(t)
            t, _ = timed(lambda: scipy_loop(e_np, True)); nonempty.append(t)
        exact = np.array_equal((d.cpu().double().numpy() ** 2).round(), (ref ** 2).round())
        o, f, n = (statistics.median(x) * 1e3 for x in (ours, full, nonempty))
        print(f"{size[0]:>4}x{size[1]:<4} {(errors >= 0).float().mean().item():>7.1%} {o:>8.2f} {f:>13.1f} "
              f"{f / o:>5.0f}x {n:>19.1f} {n / o:>5.0f}x {str(exact):>6}")


if __name__ == "__main__":
    main()
