"""tools/migrate_equivalence_heads.py: a '+dirty' head loses '+dirty' only when its commit's package has the record's fingerprint."""
import importlib.util, json, subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("migrate_equivalence_heads", ROOT / "tools" / "migrate_equivalence_heads.py")
mig = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mig)


def test_dirty_heads(tmp_path):
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()[:12]
    cache = {}
    clean = mig.fingerprint_at(head, cache)
    assert len(clean) == 12
    records = [{"from": ["a" * 12], "to": clean, "base": "base", "head": f"{head}+dirty"},        # the package was clean
               {"from": ["b" * 12], "to": "0" * 12, "base": "base", "head": f"{head}+dirty"},     # other code: it was not
               {"from": ["c" * 12], "to": clean, "base": "base", "head": head}]
    (tmp_path / "equivalence.json").write_text(json.dumps(records, indent=1) + "\n")
    said = mig.migrate(tmp_path, cache)
    heads = [r["head"] for r in json.loads((tmp_path / "equivalence.json").read_text())]
    assert heads == [head, f"{head}+dirty", head]
    assert len(said) == 2 and "head stays" in said[1]
    before = (tmp_path / "equivalence.json").read_bytes()
    mig.migrate(tmp_path, cache)                                   # a second run changes nothing
    assert (tmp_path / "equivalence.json").read_bytes() == before
