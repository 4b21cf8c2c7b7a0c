"""The command lines: bad arguments are one line and status 2; SIGINT/SIGTERM stop a run with a checkpoint it resumes from."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import numpy as np
from PIL import Image

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
    assert proc.returncode == 128 + signum, stderr              # 130 for SIGINT, 143 for SIGTERM: a scheduler requeues it
    assert "Traceback" not in stderr and f"stopped by {signum.name}" in stderr, stderr
    assert f"continue with --resume {out / 'last.pt'}" in stderr, stderr
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
    # skipping: the steps that cannot be taken are skipped until more than --max-skipped, then the run stops
    assert train_main(args + ["--skip-nonfinite", "--max-skipped", "3", "--overwrite"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "step skipped (1 so far, at most 3)" in "\n".join(err), err
    assert "more than max_skipped 3; " in err[-1] and not any("Traceback" in line for line in err), err


def _last_line(capsys, status, expected):
    "The single stderr line of a run that ended with `status` (the stderr before it: status lines)."
    err = capsys.readouterr().err.strip().splitlines()
    assert status == expected, err
    assert err and not any("Traceback" in line for line in err), err
    return err[-1]


def test_a_run_directory_belongs_to_one_run(checkpoint, tmp_path, capsys):
    out = checkpoint.parent
    before = read_checkpoint(out / "best.pt")
    # a new run into a folder holding a finished run: refused, nothing touched
    line = _last_line(capsys, train_main(TINY + ["--out", str(out), "--iterations", "1"]), 2)
    assert "already holds a run (last.pt" in line and "--resume" in line and "--overwrite" in line, line
    after = read_checkpoint(out / "best.pt")
    assert after["iteration"] == before["iteration"] and all(torch.equal(v, after["model"][k]) for k, v in before["model"].items())
    # two runs at once: the second refuses at once, naming the first's process
    busy = tmp_path / "busy"
    proc = _run_until_training(busy)
    line = _last_line(capsys, train_main(TINY + ["--out", str(busy)]), 2)
    assert f"is in use by process {proc.pid} on" in line, line
    # the first is killed (no clean-up): its lock is taken over by the next run
    proc.kill(); proc.communicate()
    assert train_main(TINY + ["--out", str(busy), "--iterations", "1"]) == 0
    assert f"took over the run directory {busy} from process {proc.pid}" in capsys.readouterr().err
    # --overwrite replaces a run: its files go, the new run's come
    assert train_main(TINY + ["--out", str(busy), "--iterations", "1", "--overwrite"]) == 0
    assert read_checkpoint(busy / "last.pt")["config"]["iterations"] == 1


def test_a_resume_cannot_change_the_run(checkpoint, capsys):
    done = read_checkpoint(checkpoint)["iteration"]
    line = _last_line(capsys, train_main(["--resume", str(checkpoint), "--loss", "ce"]), 2)
    assert "trained with the contextrast loss" in line and "cannot change its loss to ce" in line, line
    line = _last_line(capsys, train_main(["--resume", str(checkpoint), "--iterations", str(done - 1)]), 2)
    assert f"has trained {done} iterations; --iterations {done - 1} asks for fewer" in line, line
    assert read_checkpoint(checkpoint)["iteration"] == done
    # every loss build_loss accepts is offered, also those registered on first use
    line = _last_line(capsys, train_main(["--loss", "infonce"]), 2)
    assert "contextrast_pp" in line and "region_contrast" in line and "ce, " in line, line


def test_fp16_on_a_cpu_is_named(tmp_path, capsys):
    assert train_main(TINY + ["--iterations", "1", "--amp", "fp16", "--out", str(tmp_path / "fp16")]) == 0
    assert "warning: fp16 autocast on a CPU is slow" in capsys.readouterr().err


def _camvid(root, size=(36, 48)):
    "A four-image CamVid in the SegNet layout (two training, two validation images)."
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for k in range(2):
            (root / split).mkdir(parents=True, exist_ok=True); (root / f"{split}annot").mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / split / f"{k}.png")
            Image.fromarray(rng.integers(0, 12, size, dtype=np.uint8)).save(root / f"{split}annot" / f"{k}.png")
    return root


CAMVID = ["--dataset", "camvid", "--preset", "cpu", "--iterations", "2", "--batch", "2", "--crop", "32", "--embed-dim", "8",
          "--max-samples", "32", "--val-interval", "0", "--no-progress", "--workers", "0"]


def test_bad_files_are_one_line_each(tmp_path, capsys):
    root = _camvid(tmp_path / "camvid")
    run = lambda name, *extra: train_main(CAMVID + ["--root", str(root), "--out", str(tmp_path / name), *extra])
    assert run("good") == 0
    capsys.readouterr()
    # a label value outside the classes, met in a data-loading worker during validation: one line, the training kept
    Image.fromarray(np.full((36, 48), 40, np.uint8)).save(root / "valannot" / "1.png")
    line = _last_line(capsys, run("labels", "--workers", "1"), 2)
    assert line.startswith(f"contextrast_train: error: {root / 'valannot' / '1.png'}: ") and "[40]" in line, line
    assert read_checkpoint(tmp_path / "labels" / "last.pt")["iteration"] == 2
    # a truncated training image
    data = (root / "train" / "0.png").read_bytes()
    (root / "train" / "0.png").write_bytes(data[: len(data) // 2])
    line = _last_line(capsys, run("truncated"), 2)
    assert f"cannot decode image {root / 'train' / '0.png'}" in line, line
    # an image and its labels of different sizes: found from the headers before anything is built
    Image.fromarray(np.zeros((36, 40), np.uint8)).save(root / "trainannot" / "1.png")
    line = _last_line(capsys, run("sizes"), 2)
    assert f"image {root / 'train' / '1.png'} is (36, 48) but its labels" in line and "--check-data" in line, line
    assert not (tmp_path / "sizes").exists()
    # --check-data reads every file once and lists every problem
    assert run("check", "--check-data") == 2
    captured = capsys.readouterr()
    found = captured.out.strip().splitlines()
    assert len(found) == 3 and "0.png" in found[0] and "is (36, 48) but its labels" in found[1] and "[40]" in found[2], found
    assert "camvid train: 2 image(s), 2 with a problem" in captured.err and "camvid val: 2 image(s), 1 with a problem" in captured.err


def test_machine_failures_are_one_line(tmp_path, capsys, monkeypatch):
    # a full disk while writing a checkpoint, as torch.save reports it: exit 1, the path and the free space named
    def full(obj, f): raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 3 vs 0")
    with monkeypatch.context() as m:
        m.setattr(torch, "save", full)
        line = _last_line(capsys, train_main(TINY + ["--out", str(tmp_path / "full")]), 1)
    assert line.startswith(f"contextrast_train: cannot write checkpoint {tmp_path / 'full' / 'last.pt'}: ") and "MiB free on" in line, line
    # a run directory that refuses writes (emulated: the tests may run as root, whom permissions do not stop)
    real_open = os.open
    def refuse(path, *a, **k):
        if str(path).endswith("run.lock"): raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)
    with monkeypatch.context() as m:
        m.setattr(os, "open", refuse)
        line = _last_line(capsys, train_main(TINY + ["--out", str(tmp_path / "readonly")]), 2)
    assert line == f"contextrast_train: error: run directory {tmp_path / 'readonly'} is not usable: Permission denied", line
