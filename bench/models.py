"""Cost of every model, and eval latency of each inference network vs the same network without Contextrast parts.

For each model (11 classes): parameters and multiply-adds of the inference network at 360x480 (counted on
the meta device), the projection heads' parameters (training only), and eval latency at 360x480, batch 1,
no grad, of three things that hold the same weights: the baseline `build_network(name)`, the inference
network `build_model(name).for_inference()`, and the wrapper itself in eval mode, `model(x)`. The three
are timed interleaved (their order rotating every round) after one untimed warm-up each (`time_calls`,
notebook 08b). The table gives the fastest run of each (on a shared machine the least disturbed one;
medians are printed after it), so the ratios compare the three under the same load. For the CPU models it also times a training step
(forward, loss, backward, SGD) at batch 8 on 128x128 crops, with cross-entropy alone and with
ContextrastLoss (BANE), fastest of `--train-steps` after one warm-up.

    python bench/models.py [--models NAME ...] [--repeats 5] [--train-steps 3] [--threads N]

On a CPU shared with other jobs use `--threads 1` (or OMP_WAIT_POLICY=PASSIVE): spinning OpenMP workers
of an oversubscribed machine slow every op by large, random factors.
"""
import argparse, statistics, time

import torch

from contextrast.cost import count_macs, time_calls
from contextrast.loss import ContextrastLoss, SegCELoss
from contextrast.models import build_model, build_network, list_models

CPU_MODELS = ["deeplabv3_r18", "deeplabv3_r18_tiny", "fpn_r18", "fpn_efficientnet_lite0", "hrnet_w18_small", "hrnet_w18_small_v2"]


def n_params(m): return sum(p.numel() for p in m.parameters())


def train_step_time(name, loss_fn, steps, batch=8, size=128, classes=11):
    "Fastest of `steps` training steps at `batch` x `size`² (after one warm-up step)."
    torch.manual_seed(0)
    model = build_model(name, classes).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g)
    # blocky labels, so prediction errors form regions with boundaries as in real scenes
    y = torch.randint(0, classes, (batch, size // 16, size // 16), generator=g)
    y = y.repeat_interleave(16, 1).repeat_interleave(16, 2)
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        out = model(x)
        loss = loss_fn(out["logits"], out["embeddings"], y)["total"]
        opt.zero_grad(); loss.backward(); opt.step()
        if i: times.append(time.perf_counter() - t)
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=list_models())
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; 360x480, batch 1, eval, no grad")
    print(f"{'model':20s} {'params':>8s} {'GMACs':>7s} {'heads':>7s} {'baseline':>9s} {'inference':>9s} {'ratio':>6s}"
          f" {'wrapper':>8s} {'ratio':>6s} {'step CE':>8s} {'step BANE':>9s}   medians: baseline/inference/wrapper")
    x = torch.randn(1, 3, 360, 480)
    for name in args.models:
        with torch.device("meta"): meta = build_model(name, 11)
        params, macs, heads = n_params(meta.net), count_macs(meta.net), n_params(meta.projectors)
        torch.manual_seed(0)
        model = build_model(name, 11).eval()
        inference = model.for_inference()
        baseline = build_network(name, 11).eval()
        baseline.load_state_dict(inference.state_dict())
        runs = time_calls([baseline, inference, model], x, args.repeats, warmup=1)
        del model, inference, baseline
        t_base, t_inf, t_wrap = map(min, runs)
        if name in CPU_MODELS:
            steps = [train_step_time(name, f, args.train_steps) for f in (SegCELoss(11), ContextrastLoss(11))]
            step = f"{steps[0]:7.2f}s {steps[1]:8.2f}s"
        else:
            step = f"{'-':>8s} {'-':>9s}"
        medians = "/".join(f"{statistics.median(r):.2f}" for r in runs)
        print(f"{name:20s} {params / 1e6:7.2f}M {macs / 1e9:7.1f} {heads / 1e6:6.2f}M {t_base:8.2f}s {t_inf:8.2f}s"
              f" {t_inf / t_base:6.3f} {t_wrap:7.2f}s {t_wrap / t_base:6.3f} {step}   {medians}", flush=True)


if __name__ == "__main__":
    main()
