"""tools/migrate_run_keys.py: rows and run directories keyed by earlier versions get today's keys, once."""
import csv, importlib.util, json
from pathlib import Path

import pytest

from contextrast.checkpoint import RunLock
from contextrast.experiments import STUDIES, read_runs, run_key

spec = importlib.util.spec_from_file_location("migrate_run_keys", Path(__file__).resolve().parents[2] / "tools" / "migrate_run_keys.py")
mig = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mig)

STUDY = STUDIES["ablation_pp_components"]            # arms whose earlier keys differ in every way they could
RUNS = [("contextrast", 0, "default"), ("static", 1, "default"), ("contextrast_pp", 0, "smoke")]


def _write(tmp_path, key_of):
    "A study folder with one row per run of RUNS, keyed by `key_of(cfg)`, and a runs root with their directories."
    study_dir, runs = tmp_path / "results" / STUDY.name, tmp_path / "runs"
    study_dir.mkdir(parents=True)
    (study_dir / "study.json").write_text(json.dumps({"name": STUDY.name}))
    rows = []
    for arm, seed, mode in RUNS:
        key = key_of(STUDY.config(arm, seed, mode))
        rows.append({"study": STUDY.name, "arm": arm, "seed": str(seed), "mode": mode, "key": key, "miou": "0.5"})
        d = runs / key
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps({"key": key, "miou": 0.5}))
        (d / "config.json").write_text(json.dumps({"out_dir": str(d), "seed": seed}))
    with open(study_dir / "runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0])); w.writeheader(); w.writerows(rows)
    (study_dir / "notes.json").write_text(json.dumps({"runs": [r["key"] for r in rows], "seed": 0}))
    return study_dir, runs


def test_old_keys_migrate_once(tmp_path):
    study_dir, runs = _write(tmp_path, mig.legacy_key)
    cfgs = [STUDY.config(*r) for r in RUNS]
    old, new = [mig.legacy_key(c) for c in cfgs], [run_key(c) for c in cfgs]
    assert len(set(old + new)) == 6                      # every earlier key differs from today's
    assert mig.main([str(study_dir), "--runs", str(runs)]) == 0
    assert [r["key"] for r in read_runs(study_dir)] == new
    assert json.loads((study_dir / "notes.json").read_text())["runs"] == new
    for o, n in zip(old, new):
        assert not (runs / o).exists()
        assert json.loads((runs / n / "result.json").read_text())["key"] == n
        assert Path(json.loads((runs / n / "config.json").read_text())["out_dir"]) == runs / n
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert mig.migrate(study_dir, runs, verbose=False) == []             # a second run changes nothing
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_a_row_with_neither_key_is_refused(tmp_path, capsys):
    study_dir, runs = _write(tmp_path, mig.legacy_key)
    rows = read_runs(study_dir)
    rows[1]["key"] = "0123456789ab"
    with open(study_dir / "runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0])); w.writeheader(); w.writerows(rows)
    before = (study_dir / "runs.csv").read_bytes()
    assert mig.main([str(study_dir), "--runs", str(runs)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "line 3 (arm static, seed 1, default): key 0123456789ab is neither" in err
    assert (study_dir / "runs.csv").read_bytes() == before                # nothing written
    assert all((runs / mig.legacy_key(STUDY.config(*r))).exists() for r in RUNS)


def test_a_run_in_use_is_not_moved(tmp_path):
    study_dir, runs = _write(tmp_path, run_key)         # rows already migrated, one directory left behind, in use
    cfg = STUDY.config(*RUNS[0])
    (runs / run_key(cfg)).rename(runs / mig.legacy_key(cfg))
    with RunLock(runs / mig.legacy_key(cfg)):
        with pytest.raises(mig.MigrationError, match="is in use"): mig.migrate(study_dir, runs, verbose=False)
    assert mig.migrate(study_dir, runs, verbose=False) == [f"{runs / mig.legacy_key(cfg)} -> {runs / run_key(cfg)}"]
