"""Training throughput and peak memory: cross-entropy against the Contextrast loss, same network and batch.

    python bench/train.py [--rounds 5] [--steps 5] [--threads 1] [--batch 8] [--crop 64] [--model deeplabv3_r18_tiny]
    python bench/train.py --study camvid_pretrained [--rounds 3] [--steps 3] [--batch B] [--crop H W]

`--study NAME` times the study's own `ce` and `contextrast` arms (seed 0) at its setting: its network and
ImageNet weights, crop, batch, mixed precision and dataset (which must be on disk), `--batch` and `--crop`
overriding the study's when given (a tiny setting for a quick check).

Throughput: one process builds two trainers with the same initial weights (the `cpu` preset, losses
`ce` and `contextrast`) and times full training steps (`Trainer.train_step`: forward, loss, backward,
SGD update) on the same pre-loaded ToyScenes batches, interleaving the two losses `--rounds` times
`--steps` steps each after one warm-up step each; images/s is the median over rounds, and the ratio
is taken within the run. Data loading is left out (it is the same for both losses).
Peak memory: each loss again in its own fresh subprocess, `--steps` steps. Importing PyTorch (a CUDA
build) and torchvision alone takes ~0.9 GB of resident memory, more than a step of this small network
adds, so the whole-process `ru_maxrss` hides the step; the script also resets the kernel's high-water
mark (`/proc/self/clear_refs`, Linux) just before the first step and reads the peak of the steps
(`VmHWM`) against the resident size before them (`VmRSS`).
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch


def _config(loss, args, out):
    "The benchmarked config: the `cpu` preset on ToyScenes, or the arm `loss` of `--study` (seed 0)."
    from dataclasses import replace
    from contextrast.config import Config
    crop = None if args.crop is None else tuple(args.crop * 2 if len(args.crop) == 1 else args.crop)
    if args.study is None:
        return Config(loss=loss, model=args.model or "deeplabv3_r18_tiny", batch_size=args.batch or 8,
                      crop_size=crop or (64, 64), threads=args.threads, workers=0, device="cpu", out_dir=out)
    from contextrast.experiments import STUDIES
    cfg = replace(STUDIES[args.study].config(loss, 0), threads=args.threads, workers=0, device="cpu", out_dir=out)
    if args.model: cfg = replace(cfg, model=args.model)
    return replace(cfg, batch_size=args.batch or cfg.batch_size, crop_size=crop or cfg.crop_size)


def _trainer(loss, args, out):
    from contextrast.trainer import Trainer
    return Trainer(_config(loss, args, out), verbose=False)


def _batches(trainer, n):
    "`n` training batches of the trainer's own stream (augmented ToyScenes crops)."
    from torch.utils.data import DataLoader
    from contextrast.distributed import SeededDraws, TrainStream
    stream = TrainStream(len(trainer.train_set), trainer.local_batch, seed=0)
    loader = iter(DataLoader(SeededDraws(trainer.train_set), batch_sampler=stream))
    return [next(loader) for _ in range(n)]


def throughput(args):
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {loss: _trainer(loss, args, f"{tmp}/{loss}") for loss in ("ce", "contextrast")}
        batches = _batches(trainers["ce"], args.steps)
        for t in trainers.values(): t.train_step(*batches[0])                 # warm-up
        rates = {loss: [] for loss in trainers}
        for _ in range(args.rounds):
            for loss, t in trainers.items():
                start = time.perf_counter()
                for images, labels in batches: t.train_step(images, labels)
                rates[loss].append(args.steps * t.cfg.batch_size / (time.perf_counter() - start))
    return {loss: statistics.median(r) for loss, r in rates.items()}, rates


def _status_mib(key):
    "A memory line of /proc/self/status in MiB."
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":")) / 1024


def memory_child(loss, args):
    "Run in a subprocess: resident MiB before the steps, peak MiB during `--steps` steps of `loss`, and ru_maxrss."
    with tempfile.TemporaryDirectory() as tmp:
        t = _trainer(loss, args, tmp)
        batches = _batches(t, args.steps)
        before = _status_mib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f: f.write("5")      # reset the high-water mark
        for images, labels in batches: t.train_step(images, labels)
        peak = _status_mib("VmHWM")
    print(json.dumps({"before": before, "peak": peak, "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def memory(args):
    out = {}
    for loss in ("ce", "contextrast"):
        given = dict(steps=args.steps, threads=args.threads, batch=args.batch, model=args.model, study=args.study)
        cmd = [sys.executable, __file__, "--memory-child", loss] + [f"--{k}={v}" for k, v in given.items() if v is not None]
        if args.crop is not None: cmd += ["--crop", *map(str, args.crop)]
        out[loss] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, help="default 8, or the study's")
    p.add_argument("--crop", type=int, nargs="+", help="H [W]; default 64, or the study's")
    p.add_argument("--model", help="default deeplabv3_r18_tiny, or the study's")
    p.add_argument("--study", help="time this study's ce and contextrast arms at its setting")
    p.add_argument("--memory-child", dest="memory_child")
    args = p.parse_args()
    if args.memory_child:
        return memory_child(args.memory_child, args)
    rate, rounds = throughput(args)
    mem = memory(args)
    cfg = _config("ce", args, "")
    print(f"{cfg.model}{f' from {cfg.pretrained}' if cfg.pretrained else ''}, batch {cfg.batch_size} of "
          f"{cfg.crop_size[0]}x{cfg.crop_size[1]} {cfg.dataset} crops, amp {cfg.amp}, {args.threads} thread(s)"
          f"{f', study {args.study}' if args.study else ''}, torch {torch.__version__}; {args.rounds} interleaved rounds "
          f"of {args.steps} steps")
    print("| loss | images/s (median) | per round | resident before steps (MiB) | peak during steps (MiB) | "
          "step peak − before (MiB) | process ru_maxrss (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for loss in ("ce", "contextrast"):
        m = mem[loss]
        print(f"| {loss} | {rate[loss]:.1f} | {', '.join(f'{r:.1f}' for r in rounds[loss])} | {m['before']:.0f} | "
              f"{m['peak']:.0f} | {m['peak'] - m['before']:.0f} | {m['maxrss']:.0f} |")
    print(f"contextrast / ce images/s: {rate['contextrast'] / rate['ce']:.2f} "
          f"(ce {rate['ce'] / rate['contextrast']:.2f}x faster); contextrast / ce step peak − before: "
          f"{(mem['contextrast']['peak'] - mem['contextrast']['before']) / max(mem['ce']['peak'] - mem['ce']['before'], 1e-9):.2f}")


if __name__ == "__main__":
    main()
