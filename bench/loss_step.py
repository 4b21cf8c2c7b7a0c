"""Cost of a training step per loss, measured side by side in one process: by default on one CPU thread at the CamVid study's setting.

    python bench/loss_step.py [--rounds 3] [--steps 2] [--profile] [--model fpn_r18]
    python bench/loss_step.py --device cuda --size 512 1024 --classes 19 --profile      # a GPU at Cityscapes' size

fpn_r18 from scratch (`--model`: any model name, e.g. `fpn_efficientnet_lite0`, the pretrained study's), 11
classes, 180×240 crops, batch 8, bf16 autocast, one thread (the `camvid_cpu` preset): forward, loss, backward
and SGD update of the plain network under cross-entropy (`ce`: the projection heads do not run), of the
network with its heads under cross-entropy (`ce_heads`, as the studies' CE arm: the heads run forward only),
with the heads' backward too (`heads_backward`: cross-entropy plus zero times the embeddings, so the heads and
their normalisation run backward and no contrastive term does: the part of a step any loss on these
heads pays) and under `contextrast` and `contextrast_pp`. `--device cuda`, `--size`, `--batch` and
`--classes` measure another setting (on a GPU each timed step ends with a synchronisation; all threads).
The arms alternate `--rounds` times, `--steps` steps each after one warm-up step each, on the same
batch (labels: smooth random regions); the ratios to `ce` are taken from medians within this run.
`--loss-only` times the loss's forward and backward alone, on the network's bf16 outputs for that batch
(more repeats for the same time: the part the losses differ in). `--profile` prints where one Contextrast
step's time goes (`bench/profiling.py`: device and host time, kernel launches, the costliest operators and
the functions of the package that launch the most). `--base COMMIT` adds
the loss arms with the package of git commit COMMIT (the same networks): before and after in one run.
"""
import argparse, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import profiling  # noqa: E402
from contextrast.loss import build_loss  # noqa: E402
from contextrast.models import build_model, build_network  # noqa: E402
from gpu import HeadsBackward  # noqa: E402  (bench/, this script's folder, is on sys.path)

C, SIZE, BATCH, D = 11, (180, 240), 8, 256
DEVICE = torch.device("cpu")


class Plain(torch.nn.Module):
    def __init__(self, net): super().__init__(); self.net = net
    def forward(self, x): return {"logits": self.net.forward_stages(x)["logits"], "embeddings": None}


def base_build_loss(commit):
    "`build_loss` of the package at git commit `commit`, imported beside this checkout's."
    tmp = tempfile.mkdtemp()
    subprocess.run(f"git -C {ROOT} archive {commit} contextrast | tar -x -C {tmp}", shell=True, check=True)
    saved = {k: sys.modules.pop(k) for k in [k for k in sys.modules if k.startswith("contextrast")]}
    sys.path.insert(0, tmp)
    import contextrast.contextrast_pp  # noqa: F401
    from contextrast.loss import build_loss as old
    sys.path.remove(tmp)
    for k in [k for k in sys.modules if k.startswith("contextrast")]: del sys.modules[k]
    sys.modules.update(saved)
    return old


def arm(name, model_name="fpn_r18", losses=None):
    torch.manual_seed(0)
    kind = name.split("@")[0]
    model = Plain(build_network(model_name, C)) if kind == "ce" else build_model(model_name, C, embed_dim=D)
    if kind == "heads_backward": return model.train(), HeadsBackward(C), torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss = (losses or build_loss)("ce" if kind == "ce_heads" else kind, C, **({"embed_dim": D} if kind == "contextrast_pp" else {}))
    opt = torch.optim.SGD([*model.parameters(), *loss.parameters()], lr=0.01, momentum=0.9)
    return model.train(), loss, opt


def sync():
    if DEVICE.type == "cuda": torch.cuda.synchronize()


def step(model, loss, opt, x, y):
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        out = model(x)
        total = loss(out["logits"], out["embeddings"], y)["total"]
    opt.zero_grad(set_to_none=True); total.backward(); opt.step()
    value = float(total.detach()); sync()
    return value


def main(argv=None):
    global C, DEVICE
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--arms", nargs="*", default=["ce", "ce_heads", "heads_backward", "contextrast", "contextrast_pp"],
                   help="ce (plain network), ce_heads (cross-entropy, heads running), heads_backward, contextrast, "
                        "contextrast_pp")
    p.add_argument("--model", default="fpn_r18", help="the network (fpn_r18, the camvid_cpu studies'; "
                   "fpn_efficientnet_lite0, the pretrained study's; weights do not change the cost)")
    p.add_argument("--base", help="also time the contextrast arms with the package of this git commit")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--loss-only", action="store_true", help="time the loss's forward and backward alone")
    p.add_argument("--device", default="cpu", help="cpu (one thread) or cuda")
    p.add_argument("--size", type=int, nargs=2, default=list(SIZE), metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=BATCH)
    p.add_argument("--classes", type=int, default=C)
    a = p.parse_args(argv)
    C, DEVICE = a.classes, torch.device(a.device)
    if DEVICE.type == "cpu": torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(a.batch, 3, *a.size, generator=g).to(DEVICE)
    y = F.interpolate(torch.rand(a.batch, C, 6, 8, generator=g), size=tuple(a.size), mode="bilinear").argmax(1).to(DEVICE)
    to = lambda m: (m[0].to(DEVICE), m[1].to(DEVICE), m[2])
    arms = {n: to(arm(n, a.model)) for n in a.arms}
    if a.base:
        old = base_build_loss(a.base)
        arms.update({f"{n}@{a.base}": to(arm(n, a.model, old)) for n in a.arms if n.startswith("contextrast")})
    if a.loss_only:
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
            out = arms[next(n for n in arms if n.startswith("contextrast"))][0](x)
        logits, embs = out["logits"].detach(), [e.detach() for e in out["embeddings"]]
        def loss_step(model, loss, opt, x, y):
            l, es = logits.clone().requires_grad_(), [e.clone().requires_grad_() for e in embs]
            with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
                total = loss(l, es, y)["total"]
            total.backward(); sync()
        global step
        step = loss_step
    for n in arms: step(*arms[n], x, y)
    if a.profile:
        from torch.profiler import ProfilerActivity, profile
        gpu = DEVICE.type == "cuda"
        for name in [n for n in arms if n.startswith("contextrast")][:2 if gpu else 1]:
            with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else []),
                         with_stack=True) as prof:
                step(*arms[name], x, y)
            print(f"--- {name}: one {'loss' if a.loss_only else 'training'} step")
            profiling.show(profiling.summarise(prof, gpu, operators=25, functions=20))
    times = {n: [] for n in arms}
    for _ in range(a.rounds):
        for n in arms:
            for _ in range(a.steps):
                t = time.perf_counter(); step(*arms[n], x, y); times[n].append(time.perf_counter() - t)
    med = {n: statistics.median(v) for n, v in times.items()}
    for n in arms:
        ratios = "".join(f"  to {r} {med[n] / med[r]:.3f}" for r in ("ce", "ce_heads", "heads_backward") if r in med)
        print(f"{n:26s} {med[n]:.4f} s/step  {a.batch / med[n]:6.1f} images/s{ratios}")


if __name__ == "__main__":
    main()
