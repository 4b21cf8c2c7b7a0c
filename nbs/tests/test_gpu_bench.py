"""bench/gpu.py, the script prepared for a GPU machine, runs end to end on a CPU at tiny sizes."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_bench_runs_on_a_cpu(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--device", "cpu", "--tiny", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=1200)   # a guard against a hang, not a time limit
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads((tmp_path / "gpu.json").read_text())
    assert res["parity"]["ok"] and res["parity"]["loss_rel_diff"] == 0.0          # CPU against itself
    assert res["distance"]["ok"] and res["precision"] == {"bf16": True, "fp16": True}
    for case in res["cost"].values():
        assert case["ce"]["finite"] and case["contextrast"]["finite"] and case["images_per_s_ratio"] > 0
