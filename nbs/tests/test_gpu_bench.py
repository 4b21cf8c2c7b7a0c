"""bench/gpu.py, the device check prepared for a GPU machine, runs every section on a CPU at tiny sizes, from outside the repository."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(tmp_path, *args):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}        # a bare checkout: nothing on the path
    return subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--device", "cpu", "--tiny", *args],
                          capture_output=True, text=True, timeout=1800, cwd=tmp_path, env=env)   # a guard against a hang


def test_gpu_bench_runs_every_section_on_a_cpu(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    r = run(tmp_path, "--out", str(out), "--work", str(work), "--fail", "environment")
    res = json.loads((out / "gpu.json").read_text())
    sections = res["sections"]
    assert len(sections) >= 10, sections.keys()
    # the injected failure is recorded, and every other section still ran
    assert sections["environment"]["status"] == "error" and "injected" in sections["environment"]["error"]
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    bad = {n: s for n, s in sections.items() if n != "environment" and s["status"] != "ok"}
    assert not bad, json.dumps(bad, indent=1)[-4000:]
    assert r.stdout.count(": ok (") >= 10
    assert sections["parity"]["loss_rel_diff"] == 0.0                         # the CPU against itself
    assert sections["resume"]["bitwise"] and sections["determinism"]["bitwise"]
    assert sections["resume"]["state_at_resume_identical"] and sections["resume"]["max_rel_weight_diff_two_straight_runs"] == 0.0
    assert sections["distributed"]["all_gather_object_returns_what_was_sent"]
    for loss in ("contextrast", "contextrast_pp"):
        prof = sections["profile"][loss]
        assert prof["top_level_operators"] > 100 and prof["top_device_operators"]
        assert any("distance.py" in f["function"] for f in prof["top_functions"]), prof["top_functions"]
    assert sections["distance"]["multilabel"]["infinite"] > 0 and sections["distance"]["multilabel"]["same_infinities"]
    assert sections["syncs"]["contextrast"]["dispatch"] <= 8 and sections["syncs"]["contextrast_pp"]["dispatch"] <= 10
    assert sections["distributed"]["backend"] == "gloo"
    for name, case in sections["cost"].items():
        if isinstance(case, dict): assert case["time_ratio"]["ce_plain"] == 1.0 and case["contextrast"]["finite"]
    assert list(out.iterdir()) == [out / "gpu.json"]                            # run directories stay out of the results
    assert any(work.iterdir())


def test_gpu_bench_budget_skips_what_would_not_fit(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--device", "cpu", "--out", str(tmp_path),
                        "--budget", "30", "--only", "environment", "cost", "camvid"],     # 2 s fits; 75 and 130 never do
                       capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    res = json.loads((tmp_path / "gpu.json").read_text())["sections"]
    assert res["environment"]["status"] == "ok", r.stderr[-2000:]
    assert res["environment"]["contextrast"] == str(ROOT / "contextrast")       # this checkout, not an installed copy
    assert res["cost"]["status"] == "skipped" and res["camvid"]["status"] == "skipped" and "budget" in res["cost"]["reason"]


def test_resume_check_fails_when_a_random_state_is_not_restored(tmp_path, monkeypatch):
    "The resume section compares the whole state at the resume point: a trainer that forgets the random states fails it."
    from types import SimpleNamespace
    monkeypatch.syspath_prepend(str(ROOT / "bench")); monkeypatch.syspath_prepend(str(ROOT))
    import gpu_checks
    import contextrast.trainer as trainer
    ctx = SimpleNamespace(device="cpu", tiny=True, work=tmp_path)
    assert gpu_checks.resume(ctx)["ok"]
    monkeypatch.setattr(trainer, "set_rng_state", lambda state: None)
    res = gpu_checks.resume(SimpleNamespace(device="cpu", tiny=True, work=tmp_path / "broken"))
    assert not res["ok"] and any(k.startswith("rng.") for k in res["state_at_resume_differs_in"]), res
    assert gpu_checks.state_differences({"a": [1, torch_tensor()]}, {"a": [1, torch_tensor(1.0)]}) == ["a.1"]


def torch_tensor(v=0.0):
    import torch
    return torch.tensor([v])
