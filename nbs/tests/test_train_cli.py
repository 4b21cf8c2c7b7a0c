"""The command lines: bad arguments are one line and status 2; SIGINT/SIGTERM stop a run with a checkpoint it resumes from."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from contextrast.checkpoint import read_checkpoint
from contextrast.cli import eval_main, train_main

TINY = ["--iterations", "2", "--batch", "2", "--crop", "32", "--val-interval", "0", "--embed-dim", "8",
        "--max-samples", "32", "--model", "deeplabv3_r18_tiny", "--device", "cpu", "--no-progress", "--val-size", "8",
        "--workers", "0"]


def _one_line_error(capsys, run, *needles):
    "Run `run()` (a main or a parser), expect status 2 and a single stderr line holding every needle."
    try: status = run()
    except SystemExit as exit: status = exit.code
    err = capsys.readouterr().err.strip()
    assert status == 2, err
    assert "\n" not in err and "Traceback" not in err, err
    for needle in needles: assert needle in err, err
    return err


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert train_main(TINY + ["--out", str(out)]) == 0
    return out / "last.pt"


def test_training_prints_the_metrics_table(checkpoint, capsys):
    ckpt = read_checkpoint(checkpoint)
    assert ckpt["iteration"] == 2 and ckpt["model_name"] == "deeplabv3_r18_tiny"
    assert (checkpoint.parent / "config.json").exists() and (checkpoint.parent / "train.csv").exists()
    assert eval_main(["--checkpoint", str(checkpoint), "--save", "2"]) == 0
    out = capsys.readouterr().out
    assert "mean" in out and "B-IoU@5" in out and "pixel accuracy" in out
    assert len(list((checkpoint.parent / "eval_toy_val").glob("*_panel.png"))) == 2


def test_bad_arguments_are_one_line(checkpoint, tmp_path, capsys):
    _one_line_error(capsys, lambda: train_main(["--dataset", "mnist"]), "mnist")
    _one_line_error(capsys, lambda: train_main(["--model", "vgg16"]), "vgg16")
    _one_line_error(capsys, lambda: train_main(["--amp", "fp8"]), "fp8")
    _one_line_error(capsys, lambda: train_main(["--dataset", "camvid", "--root", str(tmp_path / "nowhere")]), "nowhere")
    _one_line_error(capsys, lambda: train_main(["--loss", "focal"]), "focal")
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(capsys, lambda: train_main(["--dataset", "camvid", "--root", str(empty)]), "data/README.md")
    _one_line_error(capsys, lambda: train_main(["--resume", str(tmp_path / "none.pt")]), "none.pt")
    _one_line_error(capsys, lambda: train_main(["--resume", str(checkpoint), "--model", "hrnet_w18_small"]),
                    "deeplabv3_r18_tiny")
    _one_line_error(capsys, lambda: eval_main([]), "--checkpoint")
    _one_line_error(capsys, lambda: eval_main(["--checkpoint", str(tmp_path / "none.pt")]), "none.pt")
    _one_line_error(capsys, lambda: eval_main(["--checkpoint", str(checkpoint), "--model", "hrnet_w18_small"]),
                    "deeplabv3_r18_tiny")
    # a checkpoint whose weights belong to another network
    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt["model_name"] = ckpt["config"]["model"] = "hrnet_w18_small"
    torch.save(ckpt, tmp_path / "other.pt")
    _one_line_error(capsys, lambda: eval_main(["--checkpoint", str(tmp_path / "other.pt")]), "do not fit")
    _one_line_error(capsys, lambda: train_main(["--resume", str(tmp_path / "other.pt")]), "do not fit")


def _run_until_training(out, extra=()):
    "Start a long CPU run in a subprocess; return it once it has logged a training row."
    cmd = [sys.executable, "-m", "contextrast.train",
           *TINY, "--iterations", "100000", "--log-interval", "1", "--checkpoint-interval", "100000",
           "--out", str(out), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        log = out / "train.csv"
        if log.exists() and len(log.read_text().splitlines()) >= 3: return proc
        if proc.poll() is not None: break
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"the run did not start training: {proc.communicate()[1][-2000:]}")


@pytest.mark.parametrize("signum, group", [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_a_signal_stops_the_run_with_a_checkpoint(tmp_path, signum, group, capsys):
    "SIGINT to the whole process group (Ctrl-C in a terminal: data workers too), SIGTERM to the main process."
    out = tmp_path / "run"
    proc = _run_until_training(out, ["--workers", "1"])
    if group: os.killpg(proc.pid, signum)
    else: proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and f"stopped by {signum.name}" in stderr, stderr
    ckpt = read_checkpoint(out / "last.pt")
    stopped = ckpt["iteration"]
    assert stopped >= 2 and ckpt["config"]["iterations"] == 100000
    assert not list(out.glob(".*.tmp"))
    # the run continues from there: one more iteration, then the end-of-run metrics
    assert train_main(["--resume", str(out / "last.pt"), "--iterations", str(stopped + 1), "--no-progress"]) == 0
    assert read_checkpoint(out / "last.pt")["iteration"] == stopped + 1
    assert "mean" in capsys.readouterr().out


def test_a_non_finite_loss_names_the_iteration(tmp_path, capsys):
    # a learning rate this large makes the weights, then the loss, overflow within a few steps
    # cross-entropy takes no --max-samples: the command line refuses a flag the chosen loss would ignore
    tiny_ce = [a for i, a in enumerate(TINY) if "--max-samples" not in TINY[max(i - 1, 0):i + 1]]
    args = tiny_ce + ["--iterations", "50", "--lr", "1e30", "--out", str(tmp_path / "nan"), "--loss", "ce"]
    assert train_main(TINY + ["--loss", "ce"]) == 2 and "takes no --max-samples" in capsys.readouterr().err
    assert train_main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("contextrast_train: non-finite loss at iteration") and "ce " in err[-1], err
    assert not any("Traceback" in line for line in err)
    assert train_main(args + ["--skip-nonfinite"]) == 0
