"""The correctness sections of bench/gpu.py: each takes the run's context and returns a dict with `ok`.

Every comparison states its tolerance in its result (`tolerance`), and what it measured beside it.
"""
import math
import tempfile
import warnings

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from scipy import ndimage

from contextrast.anchor_memory import AnchorMemory, anchor_anchor_loss
from contextrast.anchors import class_anchors
from contextrast.bane import bane_negatives
from contextrast.config import Config
from contextrast.distance import distance_transform
from contextrast.error_maps import class_error_maps
from contextrast.evaluate import predict
from contextrast.loss import ContextrastLoss, build_loss
from contextrast.models import build_model
from contextrast.toys import corrupt_prediction
from syncs import HostSyncs


def cuda(ctx): return ctx.device.startswith("cuda")


def loss_inputs(B, C, D, H, W, seed=0, device="cpu"):
    "Logits at stride 4, four L2-normalised embeddings at strides 4-32, blocky labels with a shifted prediction."
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, C, (B, H // 32, W // 32), generator=g).repeat_interleave(32, 1).repeat_interleave(32, 2)
    pred = torch.roll(labels, (3, 5), (1, 2))
    logits = (F.one_hot(pred, C).permute(0, 3, 1, 2).float() * 4)[..., ::4, ::4] + 0.1 * torch.randn(B, C, H // 4, W // 4, generator=g)
    embs = [F.normalize(torch.randn(B, D, H // s, W // s, generator=g), dim=1) for s in (4, 8, 16, 32)]
    return logits.to(device), [e.to(device) for e in embs], labels.to(device)


def rel(a, b):
    "Largest |a - b| over the largest |a|."
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / a.abs().max().clamp(min=1e-12)) if a.numel() else 0.0


def loss_grads(loss, logits, embs, labels, generator=None, autocast=None):
    "The loss's total and its gradients with respect to the logits and embeddings (under `autocast`, a dtype, if given)."
    x = [t.detach().clone().requires_grad_(True) for t in (logits, *embs)]
    with torch.autocast(x[0].device.type, dtype=autocast, enabled=autocast is not None):
        r = loss(x[0], x[1:], labels, generator=generator) if generator is not None else loss(x[0], x[1:], labels)
    r["total"].backward()
    return r["total"].detach(), [t.grad for t in x]


def parity(ctx):
    "ContextrastLoss on the CPU and on the device, every set smaller than max_samples (nothing drawn at random)."
    B, C, D, H, W = (2, 5, 16, 64, 64) if ctx.tiny else (4, 19, 64, 256, 512)
    inputs = loss_inputs(B, C, D, H, W)
    loss = ContextrastLoss(C, max_samples=10**7, random_fill=False, ratio=1.0)
    a, ga = loss_grads(loss, *inputs)
    b, gb = loss_grads(loss, *(t.to(ctx.device) if torch.is_tensor(t) else [e.to(ctx.device) for e in t] for t in inputs))
    grad = max(rel(u, v) for u, v in zip(ga, gb))
    lr = abs(float(a) - float(b)) / abs(float(a))
    return {"loss_cpu": float(a), "loss_device": float(b), "loss_rel_diff": lr, "grad_rel_diff": grad,
            "tolerance": 1e-4, "ok": lr < 1e-4 and grad < 1e-4}


def edt_reference(m):
    "scipy's transform of one bool map, +inf when it has no background."
    return np.full(m.shape, np.inf) if m.all() else ndimage.distance_transform_edt(m)


def multilabel_reference(x):
    "Per-value loop of scipy over every map of `x: [M, H, W]` (negative values background)."
    out = np.zeros(x.shape)
    for o, m in zip(out, x):
        for c in np.unique(m[m >= 0]):
            o[m == c] = edt_reference(m == c)[m == c]
    return out


def compare_distances(ours, ref):
    "Same infinities at the same places, and the same squared distances as integers (nothing dropped)."
    ours = ours.double().cpu().numpy()
    same_inf = bool((np.isinf(ours) == np.isinf(ref)).all()) and not np.isnan(ours).any()
    fin = np.isfinite(ref)
    wrong = int(((ours[fin] ** 2).round() != (ref[fin] ** 2).round()).sum())
    return {"pixels": int(ours.size), "infinite": int(np.isinf(ref).sum()), "same_infinities": same_inf,
            "wrong_squared_distances": wrong, "ok": same_inf and wrong == 0}


def distance(ctx):
    "The exact distance transform on the device: bool maps and integer multi-label error maps against scipy."
    B, H, W = (2, 48, 64) if ctx.tiny else (8, 128, 256)
    g = torch.Generator().manual_seed(1)
    blobs = F.interpolate(torch.rand(B, 1, H // 8, W // 8, generator=g), size=(H, W), mode="bilinear")[:, 0] > 0.55
    blobs[0] = True                                             # one map without background: +inf everywhere
    labels = F.interpolate(torch.rand(B, 6, 6, 8, generator=g), size=(H, W), mode="bilinear").argmax(1)
    errors = class_error_maps(corrupt_prediction(labels, shift=(3, 5), grown_class=2), labels, 6)
    errors[1] = 4                                               # one map that is a single error region: +inf
    out = {}
    for name, x, ref in (("bool", blobs, np.stack([edt_reference(m) for m in blobs.numpy()])),
                         ("multilabel", errors, multilabel_reference(errors.numpy()))):
        dev = distance_transform(x.to(ctx.device))
        out[name] = compare_distances(dev, ref)
        out[name]["equals_cpu"] = bool(torch.equal(dev.cpu(), distance_transform(x)))
    out["ok"] = all(out[k]["ok"] and out[k]["equals_cpu"] for k in ("bool", "multilabel"))
    return out


def bane(ctx):
    "BANE at ratios below 1 on the device (the ranking matters there): counts and the must/may rule per class."
    B, C, h, w = (2, 6, 24, 32) if ctx.tiny else (8, 19, 128, 256)
    g = torch.Generator().manual_seed(2)
    labels = F.interpolate(torch.rand(B, C, 6, 8, generator=g), size=(h, w), mode="bilinear").argmax(1)
    errors = class_error_maps(corrupt_prediction(labels, shift=(2, 3), grown_class=1), labels, C).to(ctx.device)
    d = distance_transform(errors)
    e, dn = errors.cpu().numpy(), d.double().cpu().numpy()
    out, gen = {}, torch.Generator(device=ctx.device).manual_seed(0)
    for ratio in (0.1, 0.3, 0.5):
        got = bane_negatives(errors, d, C, ratio, generator=gen).cpu().numpy()
        bad = 0
        for c in range(C):
            dc = dn[e == c]
            k = math.ceil(round(ratio * dc.size, 6))
            chosen = got[:, c]
            if k == 0: bad += int(chosen.sum() != 0); continue
            cut = np.sort(dc)[k - 1]
            must, may = (e == c) & (dn < cut), (e == c) & (dn == cut)
            bad += int(chosen.sum() != k or (must & ~chosen).any() or (chosen & ~(must | may)).any())
        out[f"ratio_{ratio}"] = {"classes_wrong": bad, "negatives": int(got.sum())}
    out["ok"] = all(v["classes_wrong"] == 0 for v in out.values())
    return out


def anchor_memory(ctx):
    "The memory on the device with a generator on the device (batched draw), and the AA loss in float32 under autocast."
    C, D = 11, 32
    mem = AnchorMemory(C, D, size=8).to(ctx.device)
    g = torch.Generator(device=ctx.device).manual_seed(0)
    for step in range(10):
        mem.push(torch.randn(C, D, device=ctx.device, generator=g), torch.rand(C, device=ctx.device, generator=g) > 0.3)
    keys, labels = mem.sample(8, g)
    counts = torch.bincount(labels[labels >= 0], minlength=C)
    anchors, present = torch.randn(C, D, device=ctx.device) * 0.3, torch.ones(C, dtype=torch.bool, device=ctx.device)
    plain = anchor_anchor_loss(anchors, present, keys, labels)
    with torch.autocast(torch.device(ctx.device).type, dtype=torch.bfloat16):
        mixed = anchor_anchor_loss(anchors, present, keys, labels)
    return {"filled": mem.filled.tolist(), "drawn_per_class": counts.tolist(), "aa_dtype_under_bf16": str(mixed.dtype),
            "aa_equal_under_autocast": bool(torch.equal(plain, mixed)),
            "ok": len(set(c for c, f in zip(counts.tolist(), mem.filled.tolist()) if f)) == 1
                  and mixed.dtype == torch.float32 and bool(torch.equal(plain, mixed))}


def precision(ctx):
    "One network and loss, the same weights and inputs, at fp32 and under bf16 / fp16 autocast: losses and gradients."
    name, size, C = ("deeplabv3_r18_tiny", (64, 64), 5) if ctx.tiny else ("deeplabv3_r18", (256, 512), 19)
    torch.manual_seed(0)
    model = build_model(name, C, embed_dim=64).to(ctx.device).train()
    loss = ContextrastLoss(C, max_samples=10**7, random_fill=False, ratio=1.0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, *size, generator=g).to(ctx.device)
    y = F.interpolate(torch.rand(2, C, 4, 8, generator=g), size=size, mode="bilinear").argmax(1).to(ctx.device)
    state = {k: v.clone() for k, v in model.state_dict().items()}     # batch-norm statistics reset between runs
    runs = {}
    for amp in ("fp32", "bf16", "fp16"):
        model.load_state_dict(state); model.zero_grad()
        with torch.autocast(torch.device(ctx.device).type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp),
                            enabled=amp != "fp32"):
            out = model(x)
            r = loss(out["logits"], out["embeddings"], y)
        r["total"].backward()
        runs[amp] = (r, torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None]))
    ref, gref = runs["fp32"]
    tol = {"bf16": 5e-2, "fp16": 1e-2}
    res = {"tolerance_rel_loss": tol}
    for amp in ("bf16", "fp16"):
        r, gr = runs[amp]
        res[amp] = {k: abs(float(r[k].detach()) - float(ref[k].detach())) / max(abs(float(ref[k])), 1e-12) for k in ("total", "ce", "pa")}
        res[amp]["grad_cosine"] = float(F.cosine_similarity(gr, gref, dim=0))
        res[amp]["finite"] = bool(torch.isfinite(r["total"])) and bool(torch.isfinite(gr).all())
    # the gradients' cosine is reported, not bound: BANE's negatives follow the argmax, which the precision moves
    res["ok"] = all(res[a]["finite"] and res[a]["total"] < tol[a] for a in tol)
    return res


class _NoFigure:
    def savefig(self, *args, **kwargs): pass


def figures_need_matplotlib():
    "Without matplotlib (a GPU image may lack it) the trainer's figures are left out; returns whether it is there."
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        import contextrast.trainer as trainer
        trainer.plot_curves = trainer.plot_predictions = lambda *args, **kwargs: _NoFigure()
        return False


def tiny_config(ctx, out_dir, **kw):
    "A toy-scene training run small enough for a section."
    base = dict(dataset="toy", model="deeplabv3_r18_tiny", embed_dim=16, iterations=6, batch_size=4, crop_size=(64, 64),
                val_interval=0, val_size=4, val_batch_size=2, workers=0, threads=0, device=ctx.device, out_dir=str(out_dir),
                max_samples=64, checkpoint_interval=1000, log_interval=1)
    base.update(kw)
    return Config(**{k: v for k, v in base.items() if k in Config.__dataclass_fields__})


def fp16_trainer(ctx):
    "The trainer's fp16 path: a GradScaler whose first scale overflows skips the step (weights kept), then trains."
    from contextrast.trainer import Trainer
    t = Trainer(tiny_config(ctx, ctx.work / "fp16", amp="fp16"), progress=False, verbose=False)
    images, labels = map(torch.stack, zip(*[t.train_set[i] for i in range(4)]))
    t.scaler = torch.amp.GradScaler(torch.device(ctx.device).type, init_scale=2.0 ** 60)    # fp16 gradients overflow
    before = [p.detach().clone() for p in t.model.parameters()]
    t.train_step(images, labels)
    kept = all(torch.equal(a, p) for a, p in zip(before, t.model.parameters()))
    scale_after_skip = float(t.scaler.get_scale())
    t.scaler.update(2.0 ** 10)                                                               # a scale that fits
    for _ in range(1 if ctx.tiny else 3): values = t.train_step(images, labels)
    moved = any(not torch.equal(a, p) for a, p in zip(before, t.model.parameters()))
    return {"skipped_step_kept_weights": kept, "scale_after_skip": scale_after_skip, "trained_after": moved,
            "last_total": values["total"], "ok": kept and scale_after_skip < 2.0 ** 60 and moved and math.isfinite(values["total"])}


def state_differences(a, b, prefix=""):
    "The keys (dotted) where two nested state dicts differ: tensors compared bit for bit, other values with ==."
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys(): return [f"{prefix}keys"]
        return [d for k in a for d in state_differences(a[k], b[k], f"{prefix}{k}.")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b): return [f"{prefix}len"]
        return [d for i, (u, v) in enumerate(zip(a, b)) for d in state_differences(u, v, f"{prefix}{i}.")]
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype \
            and bool(torch.equal(a.cpu(), b.cpu()))
        return [] if same else [prefix.rstrip(".")]
    return [] if a == b else [prefix.rstrip(".")]


def resume(ctx):
    """Train 3 iterations, save, resume: the resumed trainer's whole state (weights, optimiser, scaler, criterion,
    CPU and GPU random states) must equal the saved one bit for bit, on every device. Then 3 more iterations:
    on the CPU the resumed run equals a straight 6-iteration run bit for bit; on CUDA it cannot (float atomics,
    the bilinear backward and cuDNN make two identical runs differ, and BANE's negatives follow the argmax, so a
    difference in the last bits can move a whole error region), so the drift is reported beside the floor:
    how far a second straight run lies from the first, and beside the drift a relative 1e-7 change of the
    weights after iteration 3 causes by iteration 6."""
    from contextrast.trainer import Trainer
    straight = Trainer(tiny_config(ctx, ctx.work / "straight"), progress=False, verbose=False)
    straight.fit()
    again = Trainer(tiny_config(ctx, ctx.work / "again"), progress=False, verbose=False)
    again.fit()
    half = Trainer(tiny_config(ctx, ctx.work / "half"), progress=False, verbose=False)
    half.fit(until=3)
    path = half.save_checkpoint()
    saved = half.state_dict()
    resumed = Trainer.resume(path, progress=False, verbose=False)
    loaded = resumed.state_dict()
    differ = state_differences(saved, loaded)
    resumed.fit()
    nudged = Trainer(tiny_config(ctx, ctx.work / "nudged"), progress=False, verbose=False)   # how chaotic 3 iterations are
    nudged.fit(until=3)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in nudged.model.parameters(): p.mul_(1 + 1e-7 * torch.randn(p.shape, generator=g).to(p.device))
    nudged.fit()
    def worst(u, v):
        a, b = u.model.state_dict(), v.model.state_dict()
        return max(rel(a[k], b[k]) for k in a if a[k].is_floating_point())
    drift, floor = worst(straight, resumed), worst(straight, again)
    res = {"state_at_resume_differs_in": differ, "state_at_resume_identical": not differ,
           "iterations": [half.iteration, resumed.iteration], "max_rel_weight_diff": drift,
           "max_rel_weight_diff_two_straight_runs": floor, "bitwise": drift == 0.0,
           "max_rel_weight_diff_weights_nudged_1e-7_at_3": worst(straight, nudged)}
    if cuda(ctx):
        res["note"] = "on CUDA the continuation is reported, not bound: two straight runs differ as much (the floor)"
        res["ok"] = not differ and resumed.iteration == straight.iteration
    else:
        res["tolerance"] = 0.0
        res["ok"] = not differ and drift == 0.0 and floor == 0.0
    return res


def evaluation(ctx):
    "Sliding-window and multi-scale + flip inference on the device against the CPU's."
    torch.manual_seed(0)
    net = build_model("deeplabv3_r18_tiny", 5, embed_dim=16).for_inference().eval()
    H, W = (72, 100) if ctx.tiny else (360, 480)
    x = torch.randn(1, 3, H, W, generator=torch.Generator().manual_seed(3))
    res = {"tolerance_prob": 1e-2}          # cuDNN's convolutions may use TF32 (its default): ~1e-3 in the logits
    for name, kw in (("slide", dict(mode="slide", crop=(48, 64), stride=(32, 40))),
                     ("multiscale_flip", dict(scales=(0.75, 1.0, 1.25), flip=True))):
        with torch.no_grad():
            a = predict(net, x, **kw)
            b = predict(net.to(ctx.device), x.to(ctx.device), **kw).cpu()
        net.cpu()
        res[name] = {"max_prob_diff": float((a - b).abs().max()), "argmax_agree": float((a.argmax(1) == b.argmax(1)).float().mean())}
    res["ok"] = all(res[k]["max_prob_diff"] < 1e-2 for k in ("slide", "multiscale_flip"))
    return res


def peers(ctx):
    "contextrast_pp and the three peers: two trainer steps each under bf16 autocast, finite losses and moved weights."
    from contextrast.trainer import Trainer
    res = {}
    for name in ("contextrast_pp", "contrastiveseg", "region_contrast", "multiscale_contrast"):
        t = Trainer(tiny_config(ctx, ctx.work / name, loss=name, amp="bf16", **({} if ctx.tiny else {"embed_dim": 64})),
                    progress=False, verbose=False)
        images, labels = map(torch.stack, zip(*[t.train_set[i] for i in range(4)]))
        values = [t.train_step(images, labels) for _ in range(2)]
        res[name] = {k: v for k, v in values[-1].items() if isinstance(v, float)}
        res[name]["finite"] = all(math.isfinite(v) for v in res[name].values())
    res["ok"] = all(r["finite"] for r in res.values())
    return res


def distributed(ctx):
    "A one-rank process group (NCCL on CUDA, gloo on the CPU): the anchors' all_reduce forward and backward, all_gather_object."
    backend = "nccl" if cuda(ctx) else "gloo"
    logits, embs, labels = loss_inputs(2, 5, 16, 64, 64, device=ctx.device)
    e = embs[0].clone().requires_grad_(True)
    A, p, n = class_anchors(e, labels, 5)
    A.square().sum().backward()
    g_local = e.grad.clone(); e.grad = None
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group(backend, init_method=f"file://{tmp}/pg", rank=0, world_size=1)
        try:
            A2, p2, n2 = class_anchors(e, labels, 5)
            A2.square().sum().backward()
            gathered = [None]
            dist.all_gather_object(gathered, {"rank": dist.get_rank(), "anchors": A2.detach().cpu()})
        finally:
            dist.destroy_process_group()
    tol = 1e-5 if cuda(ctx) else 0.0        # CUDA's scatter_add_ adds with atomics: two calls differ in the last bits
    diff = {"anchors": rel(A, A2), "negatives": rel(n.float(), n2.float()), "gradient": rel(g_local, e.grad)}
    gathered_same = bool(torch.equal(gathered[0]["anchors"], A2.detach().cpu())) and gathered[0]["rank"] == 0
    return {"backend": backend, "rel_diff_to_single_process": diff, "tolerance": tol,
            "all_gather_object_returns_what_was_sent": gathered_same,
            "untested": "multi-GPU runs and SyncBatchNorm across GPUs (one GPU here)",
            "ok": all(v <= tol for v in diff.values()) and gathered_same}


def syncs(ctx):
    "Host syncs of one loss forward + backward: the dispatch count, and on CUDA the driver's own count (sync debug mode)."
    B, C, D, H, W = (2, 11, 16, 64, 64) if ctx.tiny else (8, 19, 256, 512, 1024)
    res = {"budget": {"ce": 1, "contextrast": 8, "contextrast_pp": 10}}
    for name in ("ce", "contextrast", "contextrast_pp"):
        loss = build_loss(name, C, **({"embed_dim": D} if name == "contextrast_pp" else {})).to(ctx.device)
        if name == "contextrast_pp": loss.memory.batched = True                # the draw a GPU makes (the CPU's default differs)
        logits, embs, labels = loss_inputs(B, C, D, H, W, device=ctx.device)
        for _ in range(2): loss_grads(loss, logits, embs, labels)          # the memory filled, kernels loaded
        with HostSyncs() as counted:
            loss_grads(loss, logits, embs, labels)
        entry = {"dispatch": counted.total, "kinds": dict(counted.counts)}
        if cuda(ctx):
            torch.cuda.synchronize()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try: loss_grads(loss, logits, embs, labels)
                finally: torch.cuda.set_sync_debug_mode("default")
            entry["cuda_sync_warnings"] = sum("synchroniz" in str(w.message) for w in caught)
        res[name] = entry
    res["ok"] = all(res[n]["dispatch"] <= res["budget"][n] for n in res["budget"])
    return res


def determinism(ctx):
    "The same loss forward + backward twice on the device: how far two runs differ (float atomics in scatter_add_, bilinear backward)."
    B, C, D, H, W = (2, 5, 16, 64, 64) if ctx.tiny else (4, 19, 64, 256, 512)
    inputs = loss_inputs(B, C, D, H, W, device=ctx.device)
    loss = ContextrastLoss(C, max_samples=10**7, random_fill=False, ratio=1.0)
    torch.manual_seed(0); a, ga = loss_grads(loss, *inputs)                # the same draws in both runs
    torch.manual_seed(0); b, gb = loss_grads(loss, *inputs)
    worst = max(rel(u, v) for u, v in zip(ga, gb))
    return {"loss_rel_diff": rel(a, b), "grad_rel_diff": worst, "bitwise": worst == 0.0 and bool(torch.equal(a, b)),
            "tolerance": 1e-5 if cuda(ctx) else 0.0, "ok": worst <= (1e-5 if cuda(ctx) else 0.0)}
