"""Everything a GPU must confirm, in one run of at most 8 minutes on one H100/H200.

1. parity: ContextrastLoss (BANE, fusion) on the same inputs on the CPU and on the device (1e-4);
2. distance: the batched exact distance transform on the device against scipy's (exact);
3. precision: bf16 and fp16 training steps of a real network with the loss, all finite;
4. cost: Contextrast vs cross-entropy training steps, images/s and peak memory, for hrnet_w48 at
   512x1024 batch 2 and deeplabv3_r101 (the ratios within one run are the result);
5. camvid: a 300-iteration bf16 CamVid run (deeplabv3_r18 from scratch, 360x480 crops) with its
   validation mIoU, when CamVid is found (`--camvid DIR`; JPEG images as packed for the device work).

    python bench/gpu.py --out $OUT                      # on the GPU machine
    python bench/gpu.py --device cpu --tiny --out DIR   # the same code on a CPU in well under a minute

Results go to `<out>/gpu.json` (and are printed). `--tiny` shrinks every size so that the script's
paths are tested on a CPU; its numbers mean nothing.
"""
import argparse, json, math, sys, time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch.utils.data import Dataset

from contextrast.config import Config
from contextrast.data import CamVid, read_image, read_label, train_transform, eval_transform
from contextrast.distance import distance_transform
from contextrast.loss import ContextrastLoss, SegCELoss
from contextrast.models import build_model


def loss_inputs(B, C, D, H, W, seed=0):
    "Logits at stride 4, four L2-normalised embeddings at strides 4-32, blocky labels with a shifted prediction."
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, C, (B, H // 32, W // 32), generator=g).repeat_interleave(32, 1).repeat_interleave(32, 2)
    pred = torch.roll(labels, (3, 5), (1, 2))
    logits = (F.one_hot(pred, C).permute(0, 3, 1, 2).float() * 4)[..., ::4, ::4] + 0.1 * torch.randn(B, C, H // 4, W // 4, generator=g)
    embs = [F.normalize(torch.randn(B, D, H // s, W // s, generator=g), dim=1) for s in (4, 8, 16, 32)]
    return logits, embs, labels


def parity(device, tiny):
    "Loss and input gradients on the CPU vs the device; the largest relative differences."
    B, C, D, H, W = (2, 5, 16, 64, 64) if tiny else (4, 19, 64, 256, 512)
    logits, embs, labels = loss_inputs(B, C, D, H, W)
    # every set smaller than max_samples: nothing is sampled at random, so the two devices see the same pixels
    loss = ContextrastLoss(C, max_samples=10**7, random_fill=False, ratio=1.0)
    out = {}
    for dev in ("cpu", device):
        x = [t.to(dev).requires_grad_(True) for t in (logits, *embs)]
        r = loss(x[0], x[1:], labels.to(dev))
        r["total"].backward()
        out[dev] = (float(r["total"]), [t.grad.detach().cpu() for t in x[1:]])
    (a, ga), (b, gb) = out["cpu"], out[device]
    grad = max(float((u - v).abs().max() / u.abs().max().clamp(min=1e-12)) for u, v in zip(ga, gb))
    return {"loss_cpu": a, "loss_device": b, "loss_rel_diff": abs(a - b) / abs(a), "grad_rel_diff": grad,
            "ok": abs(a - b) / abs(a) < 1e-4 and grad < 1e-4}


def distance(device, tiny):
    "Exactness of the device's distance transform against scipy on random blobs."
    B, H, W = (2, 48, 64) if tiny else (8, 512, 1024)
    g = torch.Generator().manual_seed(1)
    x = F.interpolate(torch.rand(B, 1, H // 8, W // 8, generator=g), size=(H, W), mode="bilinear")[:, 0] > 0.55
    ours = distance_transform(x.to(device)).cpu().double().numpy()
    ref = np.stack([ndimage.distance_transform_edt(m) for m in x.numpy()])
    finite = np.isfinite(ours)
    return {"max_abs_diff": float(np.abs(ours[finite] - ref[finite]).max()), "maps": B, "size": [H, W],
            "ok": bool(np.abs(ours[finite] - ref[finite]).max() < 1e-3)}


def step_cost(model_name, loss_name, device, size, batch, amp="bf16", steps=5, warmup=2, C=19):
    "Median seconds of one training step and the peak memory (MiB) of `model_name` with `loss_name`."
    torch.manual_seed(0)
    model = build_model(model_name, C, embed_dim=256).to(device).train()
    loss = (ContextrastLoss(C) if loss_name == "contextrast" else SegCELoss(C)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch, 3, *size, device=device)
    y = torch.randint(0, C, (batch, *size), device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    scaler = torch.amp.GradScaler(torch.device(device).type, enabled=amp == "fp16")
    times, finite = [], True
    if torch.device(device).type == "cuda": torch.cuda.reset_peak_memory_stats(device)
    for i in range(warmup + steps):
        if torch.device(device).type == "cuda": torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.autocast(torch.device(device).type, dtype=dtype):
            out = model(x)
            total = loss(out["logits"], out["embeddings"], y)["total"]
        finite &= bool(torch.isfinite(total))
        opt.zero_grad(); scaler.scale(total).backward(); scaler.step(opt); scaler.update()
        if torch.device(device).type == "cuda": torch.cuda.synchronize()
        if i >= warmup: times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if torch.device(device).type == "cuda" else float("nan")
    s = float(np.median(times))
    return {"seconds": s, "images_per_s": batch / s, "peak_mib": peak, "finite": finite}


class PairedFiles(Dataset):
    "CamVid from any image suffix (the device copy holds JPEG images): pairs `<split>/<name>.*` with `<split>annot/<name>.png`."
    num_classes, classes, palette, ignore_index = CamVid.num_classes, CamVid.classes, CamVid.palette, 255

    def __init__(self, root, split, transform):
        root = Path(root)
        self.files = [(p, root / f"{split}annot" / f"{p.stem}.png") for p in sorted((root / split).iterdir())
                      if (root / f"{split}annot" / f"{p.stem}.png").exists()]
        if not self.files: raise FileNotFoundError(f"no CamVid {split} images under {root}")
        self.transform = transform

    def __len__(self): return len(self.files)

    def __getitem__(self, i):
        image, raw = read_image(self.files[i][0]), read_label(self.files[i][1]).long()
        labels = torch.where(raw >= 11, 255, raw)
        return self.transform(image, labels)


def camvid_run(device, root, tiny, out_dir):
    "A bf16 CamVid run (300 iterations; 4 in --tiny) and its validation mIoU and speed."
    from contextrast.trainer import Trainer
    crop = (64, 80) if tiny else (360, 480)
    cfg = Config(dataset="camvid", model="deeplabv3_r18_tiny" if tiny else "deeplabv3_r18", embed_dim=16 if tiny else 256,
                 iterations=4 if tiny else 300, batch_size=2 if tiny else 16, crop_size=crop, lr=0.02, amp="bf16",
                 val_interval=0, val_size=4 if tiny else 0, val_batch_size=1, workers=0 if tiny else 8, threads=0,
                 device=device, out_dir=str(out_dir / "camvid_run"), max_samples=64 if tiny else 1024)
    train = PairedFiles(root, "train", train_transform(crop))
    val = PairedFiles(root, "val", eval_transform())
    t = time.perf_counter()
    trainer = Trainer(cfg, train_set=train, val_set=val, progress=False, verbose=False)
    result = trainer.fit()
    return {"iterations": cfg.iterations, "seconds": time.perf_counter() - t, "val_miou": float(result["final"]["miou"]),
            "val_images": len(trainer.val_set), "model": cfg.model}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="small sizes: test the script's paths on a CPU")
    p.add_argument("--camvid", help="CamVid folder (train/, trainannot/, val/, valannot/)")
    p.add_argument("--out", default="bench_gpu_out")
    a = p.parse_args(argv)
    if a.device.startswith("cuda") and not torch.cuda.is_available(): sys.exit("bench/gpu.py: CUDA is not available")
    out_dir = Path(a.out); out_dir.mkdir(parents=True, exist_ok=True)
    res = {"device": torch.cuda.get_device_name(a.device) if a.device.startswith("cuda") else "cpu",
           "torch": torch.__version__, "tiny": a.tiny}
    t0 = time.perf_counter()
    res["parity"] = parity(a.device, a.tiny)
    res["distance"] = distance(a.device, a.tiny)
    small = ("deeplabv3_r18_tiny", (64, 64), 2) if a.tiny else ("hrnet_w48", (512, 1024), 2)
    res["precision"] = {amp: step_cost(small[0], "contextrast", a.device, small[1], small[2], amp, steps=1, warmup=1)["finite"]
                        for amp in ("bf16", "fp16")}
    cases = [small] + ([("hrnet_w18_small", (64, 64), 2)] if a.tiny else [("deeplabv3_r101", (512, 1024), 2)])
    res["cost"] = {}
    for name, size, batch in cases:
        ce = step_cost(name, "ce", a.device, size, batch, steps=2 if a.tiny else 10)
        cx = step_cost(name, "contextrast", a.device, size, batch, steps=2 if a.tiny else 10)
        res["cost"][name] = {"size": list(size), "batch": batch, "ce": ce, "contextrast": cx,
                             "images_per_s_ratio": cx["images_per_s"] / ce["images_per_s"],
                             "peak_memory_ratio": cx["peak_mib"] / ce["peak_mib"] if ce["peak_mib"] == ce["peak_mib"] else None}
    if a.camvid: res["camvid"] = camvid_run(a.device, a.camvid, a.tiny, out_dir)
    res["seconds"] = time.perf_counter() - t0
    (out_dir / "gpu.json").write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))
    return 0 if res["parity"]["ok"] and res["distance"]["ok"] and all(res["precision"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
