"""Two CPU processes (gloo, DDP) agree when one of them cannot load its batch: a signal stops both with one
checkpoint, an error ends both at once (none waits in a collective for ever), and the run directory is held by
process 0: a second run refuses on every process."""
import os
import signal
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import Dataset

from contextrast.checkpoint import RunDirectoryError, RunLock, read_checkpoint
from contextrast.config import Config
from contextrast.trainer import Trainer

from _ddp import free_port, torchrun_env


class Blocks(Dataset):
    "Images of blocks of three classes; on process `fails_on`, the load number `at` fails (after a SIGTERM when asked)."
    num_classes, classes = 3, ("a", "b", "c")

    def __init__(self, n, at=None, with_signal=False):
        self.n, self.at, self.with_signal, self.calls = n, at, with_signal, 0

    def __len__(self): return self.n

    def __getitem__(self, i):
        self.calls += 1
        if self.calls == self.at:
            if self.with_signal: signal.raise_signal(signal.SIGTERM)      # the job is stopped: its loader dies
            raise RuntimeError("DataLoader worker (pid 1234) is killed by signal: Terminated.")
        g = torch.Generator().manual_seed(i)
        labels = torch.randint(0, 3, (4, 4), generator=g).repeat_interleave(8, 0).repeat_interleave(8, 1)
        return labels.float()[None].expand(3, -1, -1) + 0.5 * torch.randn(3, 32, 32, generator=g), labels


def _worker(rank, world, port, out_dir, case, result):
    torchrun_env(rank, world, port)
    torch.set_num_threads(1)
    cfg = Config(model="deeplabv3_r18_tiny", embed_dim=16, loss="ce", iterations=50, batch_size=4, val_interval=0,
                 checkpoint_interval=100, log_interval=1, device="cpu", workers=0, out_dir=out_dir)
    # process 1 fails loading its third batch (two images a batch)
    train = Blocks(64, at=5 if rank == 1 and case != "busy" else None, with_signal=case == "signal")
    try:
        trainer = Trainer(cfg, train, Blocks(2), verbose=False)
        r = trainer.fit()
        result[rank] = ("stopped", r["stopped_by"], r["iteration"])
    except Exception as err:
        result[rank] = ("error", type(err).__name__, str(err))
    finally:
        dist.destroy_process_group()


def _run(out_dir, case, timeout=120):
    "Both processes' outcomes; a process still running after `timeout` seconds (a hang) fails the test."
    with mp.Manager() as manager:
        result = manager.dict()
        ctx = mp.spawn(_worker, args=(2, free_port(), str(out_dir), case, result), nprocs=2, join=False)
        deadline = time.time() + timeout
        while not ctx.join(timeout=1):
            if time.time() > deadline:
                for p in ctx.processes: p.kill()
                raise AssertionError(f"{case}: the processes still wait after {timeout} s: {dict(result)}")
        return dict(result)


def test_a_signal_on_one_process_stops_both_with_a_checkpoint(tmp_path):
    r = _run(tmp_path / "signal", "signal")
    assert r[1] == ("stopped", "SIGTERM", 2) and r[0] == ("stopped", "another process", 2), r
    assert read_checkpoint(tmp_path / "signal" / "last.pt")["iteration"] == 2


def test_an_error_on_one_process_ends_both(tmp_path):
    r = _run(tmp_path / "error", "error")
    assert r[1][:2] == ("error", "RuntimeError") and "is killed by signal" in r[1][2], r
    assert r[0] == ("error", "RuntimeError", "another process of the run failed loading its batch"), r


def test_process_0_holds_the_run_directory(tmp_path):
    with RunLock(tmp_path / "busy"):
        r = _run(tmp_path / "busy", "busy")
    assert r[0][:2] == ("error", "RunDirectoryError") and f"in use by process {os.getpid()}" in r[0][2], r
    assert r[1] == ("error", "RunDirectoryError", f"process 0 could not take the run directory {tmp_path / 'busy'}"), r
