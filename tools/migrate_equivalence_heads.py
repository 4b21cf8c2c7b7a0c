"""Give the replay records of committed studies the head their package had, once.

    python tools/migrate_equivalence_heads.py [RESULTS_DIR ...]      # default: every folder under results/

Earlier versions wrote a replay record's `head` (in `results/<study>/equivalence.json`) from the state of the whole
repository, while the guard that let the replay run (`rebase_commit`) checked the package only: a record could say
`<commit>+dirty` for a checkout whose package was committed and only results or notes had changed. This reads, for
each record whose head is `<commit>+dirty`, the package of `<commit>` (`git archive`) and computes its code
fingerprint with that package's own code (as the record's `to` was computed). When it is the record's `to`, the rows
were carried to the code of that commit exactly: the package was clean, and the head becomes `<commit>`. Otherwise
the record keeps `+dirty` and the script says so. A second run changes nothing.
"""
import json, subprocess, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the package's own fingerprint function, wherever that version kept it
FINGERPRINT = """
import os, sys; sys.path.insert(0, sys.argv[1])
import contextrast
assert os.path.dirname(contextrast.__file__) == os.path.join(sys.argv[1], "contextrast"), contextrast.__file__
if os.path.exists(os.path.join(sys.argv[1], "contextrast", "provenance.py")): from contextrast.provenance import code_fingerprint
else: from contextrast.experiments import code_fingerprint
print(code_fingerprint())
"""


def fingerprint_at(commit: str, cache: dict) -> str:
    "The code fingerprint of the package at `commit`, as that package computes it ('' when it cannot be read)."
    if commit in cache: return cache[commit]
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "archive", commit, "contextrast"], cwd=ROOT, capture_output=True)
        if archive.returncode:
            cache[commit] = ""; return ""
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        p = subprocess.run([sys.executable, "-c", FINGERPRINT, tmp], capture_output=True, text=True, cwd=tmp,
                           env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"})
        cache[commit] = p.stdout.strip().splitlines()[-1] if p.returncode == 0 and p.stdout.strip() else ""
    return cache[commit]


def migrate(study_dir, cache: dict) -> list[str]:
    "Rewrite the dirty heads of `study_dir/equivalence.json` that the package at their commit shows clean; what was found."
    f = Path(study_dir) / "equivalence.json"
    if not f.exists(): return []
    records, said = json.loads(f.read_text()), []
    for r in records:
        if not r["head"].endswith("+dirty"): continue
        commit = r["head"][:-len("+dirty")]
        got = fingerprint_at(commit, cache)
        if got == r["to"]:
            r["head"] = commit
            said.append(f"{f}: base {r['base']} → {r['to']}: the package at {commit} has fingerprint {got}: head {commit}")
        else:
            said.append(f"{f}: base {r['base']} → {r['to']}: the package at {commit} has fingerprint {got or 'unreadable'}, "
                        f"not {r['to']}: head stays {commit}+dirty")
    if said: f.write_text(json.dumps(records, indent=1) + "\n")
    return said


if __name__ == "__main__":
    dirs = sys.argv[1:] or sorted(str(p) for p in (ROOT / "results").iterdir() if p.is_dir())
    cache, said = {}, []
    for d in dirs: said += migrate(d, cache)
    print("\n".join(said) if said else "no record has a dirty head")
