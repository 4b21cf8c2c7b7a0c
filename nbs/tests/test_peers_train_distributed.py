"""Two CPU processes (gloo, DDP) train with the peers that read the network's own features: ContrastiveSeg's
projection head (a module of the loss) and region contrast's memory stay identical on both ranks, and the head trains."""
import os

import torch
import torch.distributed as dist
from torch.utils.data import Dataset

from contextrast.config import Config
from contextrast.distributed import AllReduceBatchNorm
from contextrast.runlog import read_log
from contextrast.trainer import Trainer

from _ddp import torchrun_env, run_two_ranks

LOSSES = ("contrastiveseg", "region_contrast")


class Halves(Dataset):
    """Noisy 128×128 images of two classes, split at a random column near the middle: at stride 8 each class has
    more than 100 pixels, so ContrastiveSeg's rule admits both and every image has anchors and negatives."""
    num_classes, classes = 2, ("a", "b")

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        cut = int(torch.randint(56, 72, (1,), generator=g))
        labels = (torch.arange(128) >= cut).long().expand(128, -1).clone()
        image = labels.float()[None].expand(3, -1, -1) + 0.5 * torch.randn(3, 128, 128, generator=g)
        return image, labels


def _config(out_dir, loss):
    return Config(model="deeplabv3_r18_tiny", embed_dim=16, loss=loss, iterations=2, batch_size=4, lr=0.05,
                  crop_size=(128, 128), val_interval=0, val_size=0, val_batch_size=1, checkpoint_interval=100,
                  log_interval=1, device="cpu", workers=0, out_dir=str(out_dir))


def _worker(rank, world, port, out_dir, result):
    torchrun_env(rank, world, port)
    torch.set_num_threads(1)
    try:
        for loss in LOSSES:
            trainer = Trainer(_config(os.path.join(out_dir, loss), loss), Halves(8), Halves(2), verbose=False)
            start = {k: v.detach().clone() for k, v in trainer.criterion.state_dict().items()}
            bns = sum(isinstance(m, AllReduceBatchNorm) for m in trainer.criterion.modules())
            trainer.fit(until=2)
            result[(loss, rank)] = ({k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
                                    {k: v.detach().clone() for k, v in trainer.criterion.state_dict().items()}, start, bns)
    finally:
        dist.destroy_process_group()


def test_peers_with_features_stay_identical_on_two_ranks(tmp_path):
    result = run_two_ranks(_worker, str(tmp_path / "ddp"))
    for loss in LOSSES:
        (model0, crit0, start, bns), (model1, crit1, _, _) = result[(loss, 0)], result[(loss, 1)]
        for k in model0: assert torch.equal(model0[k], model1[k]), (loss, k)
        for k in crit0: assert torch.equal(crit0[k], crit1[k]), (loss, k)
    # ContrastiveSeg: the head on layer4 (128 channels) is the loss's, its batch norm synchronised, and it trained
    _, crit, start, bns = result[("contrastiveseg", 0)]
    assert bns == 1 and crit["projector.0.weight"].shape[1] == 128
    assert not torch.equal(crit["projector.0.weight"], start["projector.0.weight"])
    assert int(crit["steps"]) == 2
    log = read_log(tmp_path / "ddp" / "contrastiveseg" / "train.csv")
    assert (log["anchors"] > 0).all() and (log["contrast"] > 0).all()      # a real contrastive term, hence real gradients
    # region contrast: one centre of the decoder feature (64 channels) per class and step, the same on both ranks
    _, crit, _, _ = result[("region_contrast", 0)]
    assert crit["queue"].shape[-1] == 64 and crit["queue_len"].tolist() == [2, 2]
    assert read_log(tmp_path / "ddp" / "region_contrast" / "train.csv")["contrast"][-1] > 0
