"""Forward+backward time and peak memory of the peers' losses and Contextrast++ against ContextrastLoss, same inputs.

B = 8, 19 classes, D = 256, embeddings at strides 4, 8, 16, 32 of a 256x512 crop (L2-normalised,
leaves with gradients), logits at stride 4, and the network features the peers' releases read, as
HRNetV2-W48 gives them: its four branches concatenated at stride 4 (720 channels, a leaf with
gradients) as both the `representation` (ContrastiveSeg's projection head) and the `decoder`
feature (region contrast's centres), street-like labels (sky, buildings, sidewalk, road,
random objects of every size, an ignored band) and a prediction that is the labels shifted by a
few pixels, so it is wrong along edges. Each loss runs in its own fresh process, so that its peak
memory is its own: on CPU the peak resident set during the steps (VmHWM, reset through
/proc/self/clear_refs once the inputs exist) above the resident set at that point; on CUDA the
peak of torch.cuda.max_memory_allocated above the memory allocated before the first step. Time: median of `--repeats` forward+backward steps after one warm-up step. Rounds of
all losses are interleaved, so ratios are measured under the same machine load.

The peers' memories are full (the steady state of a long run): region contrast's 2 975 centres per
class; "contrastiveseg + banks" has 5 000 pixels and 5 000 segments per class.
"contextrast_pp" is the follow-up's loss (adaptive fusion, AA loss) with its memory full (100 anchors
per class: the steady state of a long run); its backward includes the fusion's own parameters.

    python bench/baselines.py [--device cuda] [--repeats 3] [--rounds 2] [--threads 1] [--losses a,b,...]
"""
import argparse, json, statistics, subprocess, sys, time

import torch
import torch.nn.functional as F

LOSSES = ("ce only", "contextrast", "contextrast_pp", "contrastiveseg", "contrastiveseg + banks", "region_contrast",
          "multiscale_contrast")


def street_labels(B, H, W, C, g):
    "Street-like int64 labels [B, H, W]: bands of sky, building, sidewalk, road, random objects, ignored bottom."
    y = torch.empty(B, H, W, dtype=torch.long)
    for b in range(B):
        horizon = int(torch.randint(H // 4, H // 2, (1,), generator=g))
        y[b, :horizon // 2], y[b, horizon // 2:horizon], y[b, horizon:] = 10, 2, 0
        y[b, horizon:horizon + H // 10] = 1
        for _ in range(14):
            h, w = (int(v) for v in torch.randint(6, 96, (2,), generator=g))
            top, left = int(torch.randint(0, H - h, (1,), generator=g)), int(torch.randint(0, W - w, (1,), generator=g))
            y[b, top:top + h, left:left + w] = int(torch.randint(3, C, (1,), generator=g))
    y[:, -H // 16:] = 255
    return y


FEATURES = 720                                     # HRNetV2-W48: 48 + 96 + 192 + 384 channels at stride 4
WITH_FEATURES = ("contrastiveseg", "contrastiveseg + banks", "region_contrast")


def batch(device, B=8, C=19, D=256, H=256, W=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = street_labels(B, H, W, C, g)
    pred = torch.roll(labels, shifts=(3, 5), dims=(1, 2)).clamp(max=C - 1)
    logits = (F.one_hot(pred, C).permute(0, 3, 1, 2).float() * 4)[..., ::4, ::4].contiguous()
    logits = logits + 0.1 * torch.randn(logits.shape, generator=g)
    embs = [F.normalize(torch.randn(B, D, H // s, W // s, generator=g), dim=1) for s in (4, 8, 16, 32)]
    feats = torch.randn(B, FEATURES, H // 4, W // 4, generator=g)
    to = lambda t: t.to(device)
    return (to(logits).requires_grad_(True), [to(e).requires_grad_(True) for e in embs], to(labels),
            to(feats).requires_grad_(True))


def make_loss(name, C=19, D=256):
    from contextrast.loss import ContextrastLoss, SegCELoss, build_loss
    channels = {"representation": FEATURES, "decoder": FEATURES}
    if name == "ce only": return SegCELoss(C)
    if name == "contextrast": return ContextrastLoss(C)
    if name == "contextrast_pp":
        loss = build_loss("contextrast_pp", C, embed_dim=D)
        loss.memory.queue.copy_(F.normalize(torch.randn_like(loss.memory.queue), dim=2))
        loss.memory.filled.fill_(loss.memory.size)
        return loss
    if name == "contrastiveseg + banks":
        loss = build_loss("contrastiveseg", C, embed_dim=D, memory_size=5000, feature_channels=channels)
        # full banks: the steady state of a long run
        loss.pixel_queue.copy_(F.normalize(torch.randn_like(loss.pixel_queue), dim=2)); loss.pixel_len.fill_(5000)
        loss.segment_queue.copy_(F.normalize(torch.randn_like(loss.segment_queue), dim=2)); loss.segment_len.fill_(5000)
        return loss
    if name == "region_contrast":
        loss = build_loss(name, C, feature_channels=channels)
        loss.queue.copy_(F.normalize(torch.randn_like(loss.queue), dim=2)); loss.queue_len.fill_(loss.memory_size)
        return loss
    if name == "contrastiveseg": return build_loss(name, C, embed_dim=D, feature_channels=channels)
    return build_loss(name, C)


def status_mb(field):
    "A memory field of /proc/self/status (VmRSS, VmHWM) in MiB."
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field + ":")) / 1024


def reset_peak_rss():
    with open("/proc/self/clear_refs", "w") as f: f.write("5")


def one(name, device, repeats):
    "Time and peak memory of one loss, in this process; prints one JSON line."
    device = torch.device(device)
    logits, embs, labels, feats = batch(device)
    loss = make_loss(name).to(device)
    kw = {"features": {"representation": feats, "decoder": feats}} if name in WITH_FEATURES else {}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step():
        for t in (logits, *embs, feats): t.grad = None
        out = loss(logits, embs, labels, **kw)
        out["total"].backward()
        return out

    if device.type == "cuda": torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
    else: reset_peak_rss(); base = status_mb("VmRSS")
    out = step()
    times = []
    for _ in range(repeats):
        sync(); t = time.perf_counter(); step(); sync(); times.append(time.perf_counter() - t)
    if device.type == "cuda": peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else: peak = status_mb("VmHWM") - base
    notes = {"anchors": "anchors", "memory": "bank keys", "regions": "centres", "remembered": "remembered", "anchors_1": "anchors at stride 4",
             "samples_1": "pixels at stride 4", "samples_4": "at stride 32"}
    note = ", ".join(f"{label} {int(out[k])}" for k, label in notes.items() if k in out)
    print(json.dumps({"name": name, "time": statistics.median(times), "peak_mb": peak, "note": note}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--losses", default=",".join(LOSSES), help="comma-separated subset (contextrast is always run)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.one: return one(args.one, args.device, args.repeats)
    names = [n for n in LOSSES if n in args.losses.split(",") or n == "contextrast"]
    unknown = set(args.losses.split(",")) - set(LOSSES)
    if unknown: raise SystemExit(f"unknown losses {sorted(unknown)}; choose from {', '.join(LOSSES)}")
    runs = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            cmd = [sys.executable, __file__, "--one", name, "--device", args.device,
                   "--repeats", str(args.repeats), "--threads", str(args.threads)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0: raise SystemExit(f"{name} failed:\n{res.stderr[-3000:]}")
            runs[name].append(json.loads(res.stdout.strip().splitlines()[-1]))
    ref_t = statistics.median(r["time"] for r in runs["contextrast"])
    ref_m = statistics.median(r["peak_mb"] for r in runs["contextrast"])
    print(f"device {args.device}, torch {torch.__version__}, threads {args.threads}, "
          f"{args.rounds} rounds x {args.repeats} steps (median)")
    print("| loss | fwd+bwd (s) | × Contextrast | peak memory (MiB) | × Contextrast | sampled |")
    print("|---|---|---|---|---|---|")
    for name in names:
        t = statistics.median(r["time"] for r in runs[name])
        m = statistics.median(r["peak_mb"] for r in runs[name])
        print(f"| {name} | {t:.3f} | {t / ref_t:.2f} | {m:.0f} | {m / ref_m:.2f} | {runs[name][-1]['note']} |")


if __name__ == "__main__":
    main()
