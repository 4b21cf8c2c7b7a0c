"""The device check: what one short GPU session must confirm, in one command of at most 6 minutes on one H100.

    bash bench/gpu_check.sh OUT                   # on the GPU machine: this script, CamVid from .device_data/camvid
    python bench/gpu.py --device cpu --tiny --out DIR      # every section on a CPU at tiny sizes (a test)

It runs from a bare checkout (the repository root goes on `sys.path`; the machine needs torch,
torchvision, timm, scikit-image/scipy, nothing of this project installed). The CamVid section needs
the pack that `python ../shared/tools/pack_camvid_for_device.py .device_data/camvid` writes (JPEG
images, git-ignored: carry `.device_data`); without it that section is skipped, all others run.

`<out>/gpu.json` is rewritten after every section, so a time limit or a crash keeps what finished.
Each section is guarded: an exception is recorded (`status: error`, the message and the end of the
traceback) and the next section runs. `--budget` seconds (default 330) bound the run: a section whose
estimated cost would pass the budget, given the time already spent, is skipped and says so. Run
directories go to `--work` (default: a temporary folder), never into `<out>`.

Sections, in order: environment (device, torch / torchvision / CUDA / cuDNN / NCCL versions), parity
(the loss and its gradients, CPU against the device, 1e-4), distance (bool and integer multi-label maps
against scipy, infinities compared, exact), bane (ratios 0.1-0.5: counts and the distance rule per
class), anchor_memory (device generator, batched draw, AA loss float32 under autocast), precision (bf16
and fp16 against fp32, same weights and inputs), fp16_trainer (GradScaler, a skipped step), resume (the
whole state at the resume point bit for bit; 6 iterations straight against 3 + resume + 3), evaluation
(sliding-window and multi-scale + flip, device against CPU), peers (contextrast_pp, contrastiveseg,
region_contrast, multiscale_contrast in the trainer), distributed (a one-rank NCCL group: all_reduce
forward and backward of the anchors' sums, all_gather_object), syncs (host syncs of a loss step:
dispatch count and CUDA's sync debug mode), determinism (two identical runs), cost (step time and peak
memory: cross-entropy on the plain network, without projection heads, against CE with heads, the heads
run backward with no contrastive term, Contextrast and Contextrast++), profile (one Contextrast and one
Contextrast++ loss step: wall time against device time, kernel launches, the operators and functions
that cost most), camvid (300 bf16 iterations with cross-entropy and with Contextrast: validation mIoU
and training speed).

What holds on a GPU: the losses are not bit-reproducible there. `scatter_add_` into the anchors' C+1
bins adds floats with atomics in whatever order the threads arrive, the backward of bilinear upsampling
does too, and cuDNN picks algorithms by speed; two identical runs differ in the last bits (section
determinism: gradients within 1e-5 relative). A resumed run starts from exactly the saved state (section
resume: bit for bit) and then drifts from a straight one as far as two straight runs drift from each
other: BANE's negatives follow the argmax, so a difference in the last bits can move an error region,
and on the CPU a relative 1e-7 change of the weights after 3 of 6 iterations moves a batch-norm bias by
8 % by the sixth. The CPU keeps every guarantee bit-exact. Untested here, with one GPU: multi-GPU runs
(NCCL between processes) and SyncBatchNorm across GPUs.
"""
import argparse, json, os, platform, shutil, sys, tempfile, time, traceback
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(ROOT / "bench")):
    if p not in sys.path: sys.path.insert(0, p)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402

import gpu_checks as checks  # noqa: E402
import profiling  # noqa: E402
from contextrast.config import Config  # noqa: E402
from contextrast.data import CamVid, eval_transform, read_image, read_label, train_transform  # noqa: E402
from contextrast.loss import build_loss  # noqa: E402
from contextrast.models import build_model, build_network  # noqa: E402


def version(module):
    try: return __import__(module).__version__
    except Exception as err: return f"unavailable ({type(err).__name__})"


def environment(ctx):
    "The machine and the library versions the numbers come from."
    res = {"device": ctx.device, "torch": torch.__version__, "torchvision": version("torchvision"), "timm": version("timm"),
           "scipy": version("scipy"), "skimage": version("skimage"), "numpy": np.__version__,
           "python": platform.python_version(), "cpu_threads": torch.get_num_threads(),
           "matplotlib": ctx.matplotlib or "absent: the trainer's figures are left out",
           "contextrast": str(Path(sys.modules["contextrast"].__file__).parent)}
    if checks.cuda(ctx):
        props = torch.cuda.get_device_properties(ctx.device)
        res.update(name=props.name, capability=list(torch.cuda.get_device_capability(ctx.device)),
                   memory_gib=props.total_memory / 2**30, cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), nccl=".".join(map(str, torch.cuda.nccl.version())),
                   bf16_supported=torch.cuda.is_bf16_supported(), devices=torch.cuda.device_count(),
                   cudnn_benchmark=torch.backends.cudnn.benchmark, tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    else:
        res["name"] = platform.processor() or platform.machine()
    res["ok"] = True
    return res


class PlainCE(torch.nn.Module):
    "Cross-entropy on the plain network: no projection heads run, the honest baseline of the cost."
    def __init__(self, net): super().__init__(); self.net = net

    def forward(self, x): return {"logits": self.net.forward_stages(x)["logits"], "embeddings": None}


class HeadsBackward(torch.nn.Module):
    "Cross-entropy plus zero times every embedding: the heads run backward, no contrastive term does (their floor)."
    def __init__(self, C): super().__init__(); self.ce = build_loss("ce", C)

    def forward(self, logits, embeddings, labels):
        out = self.ce(logits, embeddings, labels)
        out["total"] = out["total"] + sum(e.float().sum() for e in embeddings) * 0.0
        return out


def step_cost(ctx, model_name, arm, size, batch, steps, warmup=2, C=19):
    """Median seconds of one bf16 training step and its peak memory (MiB): arm ce_plain, ce, heads_backward,
    contextrast or contextrast_pp."""
    dev = torch.device(ctx.device)
    torch.manual_seed(0)
    D = 16 if ctx.tiny else 256
    model = (PlainCE(build_network(model_name, C)) if arm == "ce_plain" else build_model(model_name, C, embed_dim=D))
    model = model.to(dev).train()
    loss = (HeadsBackward(C) if arm == "heads_backward" else
            build_loss("ce" if arm == "ce_plain" else arm, C, **({"embed_dim": D} if arm == "contextrast_pp" else {}))).to(dev)
    params = [*model.parameters(), *loss.parameters()]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    x = torch.randn(batch, 3, *size, device=dev)
    y = F.interpolate(torch.rand(batch, C, 4, 8, device=dev), size=size, mode="bilinear").argmax(1)
    times, finite = [], True
    if dev.type == "cuda": torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(dev)
    for i in range(warmup + steps):
        t = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            out = model(x)
            total = loss(out["logits"], out["embeddings"], y)["total"]
        opt.zero_grad(set_to_none=True); total.backward(); opt.step()
        finite &= bool(torch.isfinite(total))                       # one read per step, as the trainer's
        if i >= warmup: times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else float("nan")
    s = float(np.median(times))
    del model, loss, opt
    if dev.type == "cuda": torch.cuda.empty_cache()
    return {"seconds": s, "images_per_s": batch / s, "peak_mib": peak, "finite": finite}


def cost(ctx):
    "Step time and peak memory of every arm, measured one after the other in this run; ratios against CE without heads."
    cases = ([("deeplabv3_r18_tiny", (64, 64), 2)] if ctx.tiny else
             [("hrnet_w48", (512, 1024), 2), ("deeplabv3_r101", (512, 1024), 2), ("fpn_r18", (512, 1024), 8),
              ("fpn_efficientnet_lite0", (512, 1024), 8)])
    res = {}
    for name, size, batch in cases:
        if ctx.remaining() < (5 if ctx.tiny else 45): res[name] = "skipped: budget"; continue
        arms = {arm: step_cost(ctx, name, arm, size, batch, 2 if ctx.tiny else 8)
                for arm in ("ce_plain", "ce", "heads_backward", "contextrast", "contextrast_pp")}
        base = arms["ce_plain"]
        res[name] = {"size": list(size), "batch": batch, **arms,
                     "time_ratio": {a: arms[a]["seconds"] / base["seconds"] for a in arms},
                     "memory_ratio": ({a: arms[a]["peak_mib"] / base["peak_mib"] for a in arms}
                                      if base["peak_mib"] == base["peak_mib"] else None)}
    res["ok"] = all(all(v["finite"] for k, v in r.items() if isinstance(v, dict) and "finite" in v)
                    for r in res.values() if isinstance(r, dict))
    return res


def profile(ctx):
    """Where a Contextrast loss step's time goes: its forward and backward alone, on bf16 logits and embeddings
    of the shapes fpn_r18 gives at 512×1024, batch 8, 19 classes (the cost section's setting), timed, then
    profiled once. Reports the wall time
    against the time the device is busy (a step whose device time is far below its wall time waits on the host:
    operator launches and synchronisations), the operators launched, those that take the device longest, and the
    functions of this package that launch the most (operators called at top level, and their host time)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    dev, gpu = torch.device(ctx.device), checks.cuda(ctx)
    B, C, D, H, W = (2, 5, 16, 64, 64) if ctx.tiny else (8, 19, 256, 512, 1024)
    logits, embs, labels = checks.loss_inputs(B, C, D, H, W, device=ctx.device)
    logits, embs = logits.bfloat16(), [e.bfloat16() for e in embs]           # as the heads give them under autocast
    res = {"setting": {"batch": B, "classes": C, "embed_dim": D, "size": [H, W]}}
    for name in ("contextrast", "contextrast_pp"):
        loss = build_loss(name, C, **({"embed_dim": D} if name == "contextrast_pp" else {})).to(dev)

        def once():
            total, _ = checks.loss_grads(loss, logits, embs, labels, autocast=torch.bfloat16)
            if gpu: torch.cuda.synchronize()
            return bool(torch.isfinite(total))
        finite = all(once() for _ in range(2))                                  # warm-up
        times = []
        for _ in range(2 if ctx.tiny else 10):
            t = time.perf_counter(); finite &= once(); times.append(time.perf_counter() - t)
        with torch_profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else []), with_stack=True) as prof:
            once()
        res[name] = {"wall_ms": 1e3 * float(np.median(times)), "finite": finite, **profiling.summarise(prof, gpu)}
        del loss
    res["ok"] = all(res[n]["finite"] and res[n]["top_level_operators"] > 0 for n in ("contextrast", "contextrast_pp"))
    return res


class PairedFiles(Dataset):
    "CamVid from any image suffix (the device pack holds JPEG images): pairs `<split>/<name>.*` with `<split>annot/<name>.png`."
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
        return self.transform(image, torch.where(raw >= 11, 255, raw))


def camvid(ctx):
    """Two bf16 CamVid runs, cross-entropy and Contextrast (300 iterations each; 4 in --tiny): validation mIoU and
    training speed side by side; the run directories in --work."""
    from contextrast.trainer import Trainer
    if not ctx.camvid or not Path(ctx.camvid).is_dir():
        return {"status_note": f"no CamVid pack at {ctx.camvid!r}: run ../shared/tools/pack_camvid_for_device.py", "ok": True,
                "skipped": True}
    crop = (64, 80) if ctx.tiny else (360, 480)
    res = {}
    for loss in ("ce", "contextrast"):
        if not ctx.tiny and ctx.remaining() < 45: res[loss] = "skipped: budget"; continue
        cfg = Config(dataset="camvid", model="deeplabv3_r18_tiny" if ctx.tiny else "deeplabv3_r18", loss=loss,
                     embed_dim=16 if ctx.tiny else 256, iterations=4 if ctx.tiny else 300, batch_size=2 if ctx.tiny else 16,
                     crop_size=crop, lr=0.02, amp="bf16", val_interval=0, val_size=4 if ctx.tiny else 0,
                     val_batch_size=1 if ctx.tiny else 8, workers=0 if ctx.tiny else 8, threads=0, device=ctx.device,
                     out_dir=str(ctx.work / f"camvid_{loss}"), max_samples=64 if ctx.tiny else 1024, checkpoint_interval=1000)
        t = time.perf_counter()
        trainer = Trainer(cfg, train_set=PairedFiles(ctx.camvid, "train", train_transform(crop)),
                          val_set=PairedFiles(ctx.camvid, "val", eval_transform()), progress=False, verbose=False)
        result = trainer.fit()
        res[loss] = {"iterations": cfg.iterations, "seconds": time.perf_counter() - t, "train_seconds": trainer.train_seconds,
                     "train_images_per_s": cfg.iterations * cfg.batch_size / max(trainer.train_seconds, 1e-9),
                     "val_miou": float(result["final"]["miou"]), "val_images": len(trainer.val_set), "model": cfg.model}
    if all(isinstance(res[k], dict) for k in ("ce", "contextrast")):
        res["contextrast_to_ce_train_time"] = res["contextrast"]["train_seconds"] / res["ce"]["train_seconds"]
    res["ok"] = isinstance(res.get("ce"), dict) and all(r["val_miou"] == r["val_miou"] for r in res.values() if isinstance(r, dict))
    return res


# (name, function, estimated seconds on one H100 for the full sizes)
# (name, function, estimated seconds on one H100 for the full sizes: twice what the first H100 run took,
# 2026-12-06, where all sections together took 80 s)
SECTIONS = [("environment", environment, 2), ("parity", checks.parity, 4), ("distance", checks.distance, 4),
            ("bane", checks.bane, 2), ("anchor_memory", checks.anchor_memory, 2), ("precision", checks.precision, 5),
            ("fp16_trainer", checks.fp16_trainer, 5), ("resume", checks.resume, 15), ("evaluation", checks.evaluation, 4),
            ("peers", checks.peers, 6), ("distributed", checks.distributed, 3), ("syncs", checks.syncs, 10),
            ("determinism", checks.determinism, 2), ("cost", cost, 75), ("profile", profile, 20), ("camvid", camvid, 130)]


def write(path, res):
    "The results so far, atomically."
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(res, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="small sizes: test every section on a CPU")
    p.add_argument("--camvid", default=str(ROOT / ".device_data" / "camvid"), help="the CamVid pack (train/, trainannot/, val/, valannot/)")
    p.add_argument("--out", default="bench_gpu_out", help="where gpu.json goes")
    p.add_argument("--work", help="run directories (default: a temporary folder, removed at the end)")
    p.add_argument("--budget", type=float, default=330, help="seconds the sections may take in all (330)")
    p.add_argument("--only", nargs="*", help="run only these sections")
    p.add_argument("--fail", nargs="*", default=[], help=argparse.SUPPRESS)       # raise in these sections (tests the guard)
    a = p.parse_args(argv)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        write(out / "gpu.json", {"command": " ".join(sys.argv), "error": "CUDA is not available", "torch": torch.__version__})
        sys.exit("bench/gpu.py: CUDA is not available")
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="contextrast_gpu_"))
    if work.resolve().is_relative_to(out.resolve()): sys.exit(f"bench/gpu.py: --work {work} must not lie inside --out {out}")
    t0 = time.perf_counter()
    ctx = SimpleNamespace(device=a.device, tiny=a.tiny, camvid=a.camvid, work=work, matplotlib=checks.figures_need_matplotlib(),
                          remaining=lambda: a.budget - (time.perf_counter() - t0))
    path = out / "gpu.json"
    res = {"command": " ".join(sys.argv), "tiny": a.tiny, "budget_s": a.budget,
           "untested": "multi-GPU runs and SyncBatchNorm across GPUs", "sections": {}}
    write(path, res)
    for name, fn, estimate in SECTIONS:
        if a.only and name not in a.only: continue
        if not a.tiny and estimate > ctx.remaining():
            res["sections"][name] = {"status": "skipped", "reason": f"estimated {estimate} s, {ctx.remaining():.0f} s of the budget left"}
            write(path, res); continue
        t = time.perf_counter()
        try:
            if name in a.fail: raise RuntimeError(f"failure injected into {name} by --fail")
            r = fn(ctx)
            r = {"status": "ok" if r.get("ok") else "failed", **r}
        except Exception as err:
            r = {"status": "error", "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-2500:]}
        if checks.cuda(ctx): torch.cuda.empty_cache()
        r["seconds"] = time.perf_counter() - t
        res["sections"][name] = r
        res["elapsed_s"] = time.perf_counter() - t0
        write(path, res)
        print(f"{name}: {r['status']} ({r['seconds']:.1f} s)", flush=True)
    if not a.work: shutil.rmtree(work, ignore_errors=True)
    bad = [n for n, r in res["sections"].items() if r["status"] in ("error", "failed")]
    print(f"gpu.json: {len(res['sections'])} sections, {len(bad)} not ok {bad}; {res.get('elapsed_s', 0):.0f} s", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
