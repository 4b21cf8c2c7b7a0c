"""Two CPU processes (gloo, DDP) train in lockstep with each other and with one process on the same global batch;
a loss with parameters and a memory of its own (Contextrast++) stays identical on both."""
import os

import torch
import torch.distributed as dist
from torch.utils.data import Dataset

from contextrast.models import build_model
from contextrast.checkpoint import read_checkpoint
from contextrast.config import Config
from contextrast.trainer import Trainer

from _ddp import torchrun_env, run_two_ranks

LOSSES = ("ce", "contextrast", "contextrast_pp")


class Blocks(Dataset):
    "Noisy images of 8×8-pixel blocks of three classes, randomly flipped; no ignored pixel, so every process has as many valid pixels."
    num_classes, classes = 3, ("a", "b", "c")

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        labels = torch.randint(0, 3, (4, 4), generator=g).repeat_interleave(8, 0).repeat_interleave(8, 1)
        image = labels.float()[None].expand(3, -1, -1) + 0.5 * torch.randn(3, 32, 32, generator=g)
        if torch.rand(()) < 0.5:                 # the global generator: seeded per draw by the trainer
            image, labels = image.flip(-1), labels.flip(-1)
        return image, labels


def _config(out_dir, loss):
    # 3 iterations planned, 2 run (a young network is chaotic: by its third step a 1e-7 change of the
    # weights grows to 1e-4, so later steps could not tell rounding from a bug), each followed by a
    # validation (sharded, all-reduced, best.pt); the run ends on a checkpoint, without the final validation
    return Config(model="deeplabv3_r18_tiny", embed_dim=16, loss=loss, iterations=3, batch_size=4, lr=0.05,
                  max_samples=64, val_interval=1, val_size=0, val_batch_size=1, checkpoint_interval=100,
                  log_interval=1, device="cpu", workers=0, out_dir=str(out_dir))


def _model():
    "The config's network without dropout: the only randomness one process and two cannot share."
    torch.manual_seed(0)
    model = build_model("deeplabv3_r18_tiny", Blocks.num_classes, embed_dim=16)
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, torch.nn.modules.dropout._DropoutNd): setattr(module, name, torch.nn.Identity())
    return model


def _train(out_dir, loss):
    trainer = Trainer(_config(out_dir, loss), Blocks(8), Blocks(2), model=_model(), verbose=False)
    trainer.fit(until=2)
    return {**{k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
            **{f"criterion.{k}": v.detach().clone() for k, v in trainer.criterion.state_dict().items()}}


def _train_start(loss):
    "The loss's state before any step (built as `Trainer` builds it beside a given network: right after seeding)."
    torch.manual_seed(0)
    from contextrast.config import loss_settings
    from contextrast.loss import build_loss
    cfg = _config("unused", loss)
    return {f"criterion.{k}": v for k, v in build_loss(loss, Blocks.num_classes, **loss_settings(cfg)).state_dict().items()}


def _worker(rank, world, port, out_dir, result):
    torchrun_env(rank, world, port)
    torch.set_num_threads(1)
    try:
        for loss in LOSSES:
            result[(loss, rank)] = _train(os.path.join(out_dir, loss), loss)
    finally:
        dist.destroy_process_group()


def test_two_processes_match_one_on_the_global_batch(tmp_path):
    result = run_two_ranks(_worker, str(tmp_path / "ddp"))
    for loss in LOSSES:
        ranks = result[(loss, 0)], result[(loss, 1)]
        for k in ranks[0]:               # DDP applies the same averaged gradient everywhere: identical weights
            assert torch.equal(ranks[0][k], ranks[1][k]), (loss, k)
        ckpt = read_checkpoint(tmp_path / "ddp" / loss / "last.pt")
        assert ckpt["iteration"] == 2 and len(ckpt["rng"]) == 2
        assert read_checkpoint(tmp_path / "ddp" / loss / "best.pt")["iteration"] in (1, 2)
        saved = {**ckpt["model"], **{f"criterion.{k}": v for k, v in ckpt["criterion"].items()}}
        changed = [k for k in ranks[0] if ranks[0][k].is_floating_point() and not torch.equal(ranks[0][k], saved[k])]
        assert not changed, changed
    # the adaptive fusion trained (its gradients averaged over the processes) and the memory was pushed to
    pp = result[("contextrast_pp", 0)]
    initial = _train_start("contextrast_pp")
    assert any(not torch.equal(pp[k], initial[k]) for k in pp if k.startswith("criterion.adaptive"))
    assert int(pp["criterion.memory.filled"].sum()) > 0

    # cross-entropy is a mean over pixels and synchronised batch norm sees the global batch: two processes
    # with two images each take the steps of one process with four
    torch.set_num_threads(1)
    single = _train(tmp_path / "single", "ce")
    ddp = result[("ce", 0)]
    for k, v in single.items():
        if k.startswith("projectors."):
            continue   # heads unused by cross-entropy: DDP gives them zero gradients (weight decay acts), one process none
        if v.is_floating_point():
            torch.testing.assert_close(ddp[k], v, rtol=1e-4, atol=1e-5, msg=lambda m: f"{k}: {m}")
        else:
            assert torch.equal(ddp[k], v), k
    # and the steps were real: the weights moved
    initial = _model().state_dict()
    assert max((single[k] - initial[k]).abs().max().item() for k in single if single[k].is_floating_point()) > 1e-3
