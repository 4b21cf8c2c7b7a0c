"""The losses of this checkout against those of another commit, bit for bit, on many random inputs.

    python bench/bitwise.py 8ef163e [--aa-float32-base]

For every configuration (3, 11 and 40 classes; no, few, many and all pixels wrong; ContextrastLoss with
BANE at ratios 0.3 / 0.5 / 1, semi-hard and random sampling, normalised anchors; Contextrast++ with
adaptive and static fusion; fp32 and bf16 autocast with bf16 channels-last embeddings, as a network
under autocast hands them over) both packages train the loss 3 steps from the same seed and every
loss value and every gradient (logits, embeddings, the loss's own parameters) must be `torch.equal`.
`--aa-float32-base` gives the base's AA loss the float32 similarities under autocast that this
checkout computes (the one intended change of values since 8ef163e: Contextrast++ under bf16).
Exit status 1 at the first difference, which it names.
"""
import argparse, subprocess, sys, tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "nbs" / "tests"))
from test_host_syncs import batch  # noqa: E402

CONFIGS = [("contextrast", {}), ("contextrast", {"ratio": 0.3}), ("contextrast", {"ratio": 1.0, "max_samples": 64}),
           ("contextrast", {"sampling": "semi_hard", "fusion": "none"}),
           ("contextrast", {"sampling": "random", "normalize_anchors": True}),
           ("contextrast_pp", {"embed_dim": 32, "memory_size": 7}), ("contextrast_pp", {"embed_dim": 32, "fusion": "static"})]


def load(root):
    "The `contextrast` modules importable from `root`, without disturbing another copy's."
    for k in [k for k in sys.modules if k.startswith("contextrast")]: del sys.modules[k]
    sys.path.insert(0, str(root))
    import contextrast.contextrast_pp  # noqa: F401
    mods = {k: v for k, v in sys.modules.items() if k.startswith("contextrast")}
    sys.path.pop(0)
    assert Path(mods["contextrast.loss"].__file__).is_relative_to(root), mods["contextrast.loss"].__file__
    return mods


def run(mods, C, errors, seed, amp, name, kw):
    torch.manual_seed(seed)
    loss = mods["contextrast.loss"].build_loss(name, C, **kw)
    out = []
    for step in range(3):
        logits, embs, labels = batch(C, errors, seed=seed * 10 + step, B=2, H=64, W=64)
        if amp: embs = [e.detach().to(torch.bfloat16).contiguous(memory_format=torch.channels_last).requires_grad_() for e in embs]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            r = loss(logits, embs, labels)
        r["total"].backward()
        out += [r["total"].detach(), logits.grad, *[e.grad for e in embs], *[p.grad for p in loss.parameters()]]
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("base")
    p.add_argument("--aa-float32-base", action="store_true")
    a = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp())
    subprocess.run(f"git -C {ROOT} archive {a.base} contextrast | tar -x -C {tmp}", shell=True, check=True)
    old, new = load(tmp), load(ROOT)
    if a.aa_float32_base:
        pp = old["contextrast.contextrast_pp"]
        aa = pp.anchor_anchor_loss
        def aa_float32(*args, **kw):
            with torch.autocast("cpu", enabled=False): return aa(*args, **kw)
        pp.anchor_anchor_loss = aa_float32
    n = 0
    for C in (3, 11, 40):
        for errors in (0.0, 0.05, 0.4, 1.0):
            for seed in range(2):
                for amp in (False, True):
                    for name, kw in CONFIGS:
                        for i, (x, y) in enumerate(zip(run(old, C, errors, seed, amp, name, kw), run(new, C, errors, seed, amp, name, kw))):
                            if not ((x is None and y is None) or torch.equal(x, y)):
                                print(f"differs: item {i} of {name} {kw}, {C} classes, errors {errors}, seed {seed}, bf16 {amp}")
                                return 1
                        n += 1
    print(f"{n} configurations, 3 steps each: every loss value and gradient bit-identical with {a.base}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
