"""Training throughput and peak memory: cross-entropy against the Contextrast loss, same network and batch.

    python bench/train.py [--rounds 5] [--steps 5] [--threads 1] [--batch 8] [--crop 64] [--model deeplabv3_r18_tiny]

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


def _trainer(loss, args, out):
    from contextrast.config import Config
    from contextrast.trainer import Trainer
    cfg = Config(loss=loss, model=args.model, batch_size=args.batch, crop_size=(args.crop, args.crop),
                 threads=args.threads, workers=0, device="cpu", out_dir=out)
    return Trainer(cfg, verbose=False)


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
                rates[loss].append(args.steps * args.batch / (time.perf_counter() - start))
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
        cmd = [sys.executable, __file__, "--memory-child", loss] + [f"--{k}={v}" for k, v in
               dict(steps=args.steps, threads=args.threads, batch=args.batch, crop=args.crop, model=args.model).items()]
        out[loss] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--model", default="deeplabv3_r18_tiny")
    p.add_argument("--memory-child", dest="memory_child")
    args = p.parse_args()
    if args.memory_child:
        return memory_child(args.memory_child, args)
    rate, rounds = throughput(args)
    mem = memory(args)
    print(f"{args.model}, batch {args.batch} of {args.crop}x{args.crop} ToyScenes crops, {args.threads} thread(s), "
          f"torch {torch.__version__}; {args.rounds} interleaved rounds of {args.steps} steps")
    print("| loss | images/s (median) | per round | resident before steps (MiB) | peak during steps (MiB) | "
          "step peak − before (MiB) | process ru_maxrss (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for loss in ("ce", "contextrast"):
        m = mem[loss]
        print(f"| {loss} | {rate[loss]:.1f} | {', '.join(f'{r:.1f}' for r in rounds[loss])} | {m['before']:.0f} | "
              f"{m['peak']:.0f} | {m['peak'] - m['before']:.0f} | {m['maxrss']:.0f} |")
    print(f"contextrast / ce images/s: {rate['contextrast'] / rate['ce']:.2f} "
          f"(ce {rate['ce'] / rate['contextrast']:.2f}x faster)")


if __name__ == "__main__":
    main()
