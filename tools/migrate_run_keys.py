"""Carry a study's results and run directories from the run keys of earlier versions to `experiments.run_key`, once.

    python tools/migrate_run_keys.py STUDY_DIR [--runs RUNS_ROOT]

Earlier versions keyed a run by its config in the form the first studies were keyed in: a field whose default later
became the loss's own (`None`: `layer_weights`, `fusion`) keyed as the value the loss resolves it to, `fusion` as a
switch (`True` for "static", `False` for "none"), and the fields added later (`aa_loss`, `memory_size`) only for the
losses that take them. `legacy_key` below is the one copy of that form. Today's key hashes the config as `Config`
holds it, bookkeeping left out.

The study is named by STUDY_DIR/study.json (else by the folder's name) and must be one of `experiments.STUDIES`.
Every row of STUDY_DIR/runs.csv must hold the earlier key or today's key of its config (`study.config(arm, seed,
mode)`): a row that holds neither stops the script before anything is written, naming the row. Rows with the earlier
key get today's, in runs.csv and wherever else STUDY_DIR keeps that key (any JSON file under it). With --runs, each run
directory RUNS_ROOT/<earlier key> of the study's runs (its rows, and every (arm, seed) it declares in each mode) is
renamed RUNS_ROOT/<today's key> and its `result.json` "key" rewritten (and `config.json`'s and `study_config.json`'s
`out_dir` where it names the directory; checkpoints keep the path they were written under: resume a study's run with
`contextrast_study`, which passes the directory, not with `contextrast_train --resume`). A directory in use by a
run (its lock held) or whose new name is taken by another directory stops the script; run it when no study is
running in RUNS_ROOT (a run that has finished training but is still evaluating holds no lock). A second run changes
nothing.
"""
import argparse, csv, hashlib, json, os, sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))       # this checkout's package

# the fields earlier keys hashed, before the forms below: `Config`'s fields at the last commit that keyed runs this
# way (c62b42f) but the bookkeeping ones (where a run writes, its loader processes and threads, how often it logs and
# checkpoints, CUDA switches), so that a field added since, which no earlier key could hold, leaves them unchanged
LEGACY_FIELDS = ("dataset", "root", "crop_size", "scale", "model", "pretrained", "embed_dim", "loss", "loss_weight",
                 "layer_weights", "alpha", "beta", "temperature", "sampling", "ratio", "fusion", "per_class_mean",
                 "normalize_anchors", "random_fill", "max_samples", "aa_loss", "memory_size", "iterations", "batch_size",
                 "lr", "momentum", "weight_decay", "power", "warmup_iters", "warmup_ratio", "amp", "grad_clip",
                 "skip_nonfinite", "val_interval", "val_batch_size", "val_size", "eval_scales", "eval_flip", "eval_mode",
                 "seed", "sync_bn", "ignore_index")
# fields whose default became the loss's own (None), and what earlier keys hold for a loss that does not take them
KEYED_AS_BEFORE = {"layer_weights": (1.0, 0.7, 0.4, 0.1), "fusion": True}
# fields added after runs were keyed: keyed only for losses that take them
ADDED_FIELDS = ("aa_loss", "memory_size")
MODES = ("default", "smoke", "full")


class MigrationError(Exception): pass


def legacy_key_fields(cfg) -> dict:
    "What earlier versions' `run_key` hashed for `cfg`."
    from contextrast.loss import loss_options
    d = {k: v for k, v in cfg.to_dict().items() if k in LEGACY_FIELDS}
    takes = loss_options(cfg.loss)
    for f, before in KEYED_AS_BEFORE.items():
        if d[f] is None: d[f] = takes.get(f, before)
    if d["fusion"] in ("static", "none"): d["fusion"] = d["fusion"] == "static"
    for f in ADDED_FIELDS:
        if f not in takes: d.pop(f)
    return d


def legacy_key(cfg) -> str:
    "The run key earlier versions gave `cfg`."
    return hashlib.sha1(json.dumps(legacy_key_fields(cfg), sort_keys=True).encode()).hexdigest()[:12]


def study_of(study_dir: Path):
    from contextrast.experiments import STUDIES
    f = study_dir / "study.json"
    name = json.loads(f.read_text())["name"] if f.exists() else study_dir.name
    if name not in STUDIES: raise MigrationError(f"{study_dir}: no study named {name!r}; studies: {', '.join(sorted(STUDIES))}")
    return STUDIES[name]


def _replace_keys(value, mapping):
    "`value` (parsed JSON) with every string equal to an old key of `mapping` (and every such dict key) replaced."
    if isinstance(value, str): return mapping.get(value, value)
    if isinstance(value, list): return [_replace_keys(v, mapping) for v in value]
    if isinstance(value, dict): return {mapping.get(k, k): _replace_keys(v, mapping) for k, v in value.items()}
    return value


def _rewrite_json(path: Path, mapping) -> bool:
    "Replace the old keys of `mapping` in the JSON file `path`; whether it changed."
    before = json.loads(path.read_text())
    after = _replace_keys(before, mapping)
    if after == before: return False
    path.write_text(json.dumps(after, indent=1) + "\n")
    return True


def _move_run(old: Path, new: Path, old_key: str, new_key: str) -> str | None:
    "Rename the run directory `old` to `new` and rewrite the key it stores; what was done (None: nothing)."
    from contextrast.checkpoint import RunLock, RunDirectoryError
    if old.exists() and new.exists():
        raise MigrationError(f"both {old} and {new} exist: the same run under both keys? merge them by hand")
    if old.exists():
        try: RunLock(old).acquire().release()
        except RunDirectoryError as err: raise MigrationError(f"{old} is in use: {err}; migrate after it finishes") from None
        old.rename(new)
        done = f"{old} -> {new}"
    elif new.exists(): done = None
    else: return None
    res = new / "result.json"
    if res.exists():
        r = json.loads(res.read_text())
        if r.get("key") not in (old_key, new_key):
            raise MigrationError(f"{res} holds key {r.get('key')}, neither {old_key} nor {new_key}")
        if r["key"] == old_key:
            r["key"] = new_key
            res.write_text(json.dumps(r, indent=1) + "\n")
            done = done or f"{res}: key {old_key} -> {new_key}"
    for name in ("config.json", "study_config.json"):
        f = new / name
        if f.exists():
            c = json.loads(f.read_text())
            if c.get("out_dir") and Path(c["out_dir"]).name == old_key:
                c["out_dir"] = str(Path(c["out_dir"]).with_name(new_key))
                f.write_text(json.dumps(c, indent=2) + "\n")
    return done


def migrate(study_dir, runs_root=None, verbose: bool = True) -> list[str]:
    "Migrate `study_dir` (and the study's run directories under `runs_root`); returns what changed (empty: nothing)."
    from contextrast.experiments import read_runs, run_key
    study_dir = Path(study_dir)
    study = study_of(study_dir)
    runs_csv = study_dir / "runs.csv"
    rows = read_runs(study_dir) if runs_csv.exists() else []
    mapping, moves = {}, {}                         # old key → new key; (old, new) of every run of the study
    def keys(arm, seed, mode):
        cfg = study.config(arm, seed, mode)
        old, new = legacy_key(cfg), run_key(cfg)
        if moves.get(old, new) != new:
            raise MigrationError(f"{study.name} arm {arm} seed {seed} ({mode}): its earlier key {old} is also the earlier "
                                 f"key of a run whose key is now {moves[old]}")
        return old, new
    for n, r in enumerate(rows, 2):                 # line 1 is the header
        where = f"{runs_csv} line {n} (arm {r['arm']}, seed {r['seed']}, {r['mode']})"
        try: old, new = keys(r["arm"], int(r["seed"]), r["mode"])
        except ValueError as err: raise MigrationError(f"{where}: {err}") from None
        if r["key"] not in (old, new):
            raise MigrationError(f"{where}: key {r['key']} is neither the earlier key {old} nor the key {new} of its config")
        if old != new: mapping[old] = new
        moves[old] = new
    if runs_root is not None:
        for mode in MODES:
            if mode == "full" and not study.full: continue
            for a, s in study.runs():
                old, new = keys(a, s, mode)
                moves[old] = new
    done = []
    if rows and any(r["key"] in mapping for r in rows):
        with open(runs_csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0])); w.writeheader()
            w.writerows({**r, "key": mapping.get(r["key"], r["key"])} for r in rows)
        done.append(f"{runs_csv}: {sum(r['key'] in mapping for r in rows)} keys rewritten")
    if mapping:
        for f in sorted(study_dir.rglob("*.json")):
            if _rewrite_json(f, mapping): done.append(f"{f}: keys rewritten")
    if runs_root is not None:
        for old, new in moves.items():
            if old != new and (d := _move_run(Path(runs_root) / old, Path(runs_root) / new, old, new)): done.append(d)
    if verbose:
        print("\n".join(done) if done else f"{study_dir}: every key is already today's, nothing to do")
    return done


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="tools/migrate_run_keys.py", description=__doc__.splitlines()[0])
    p.add_argument("study_dir", help="a study's results folder, e.g. results/camvid_pretrained")
    p.add_argument("--runs", help="the runs root whose run directories to rename (e.g. runs/studies)")
    a = p.parse_args(argv)
    if not Path(a.study_dir).is_dir():
        print(f"migrate_run_keys: error: {a.study_dir} is not a folder", file=sys.stderr); return 2
    try: migrate(a.study_dir, a.runs)
    except MigrationError as err:
        print(f"migrate_run_keys: error: {err}", file=sys.stderr); return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
