"""Build, run and check the project's notebooks.

    python tools/nb.py build SRC.py NB.ipynb   # percent-format script -> notebook, then run it
    python tools/nb.py run NB.ipynb [...]      # execute top to bottom in place, keep outputs and counts
    python tools/nb.py check [NB.ipynb ...]    # every output has an execution count, metadata is clean
    python tools/nb.py script NB.ipynb SRC.py  # notebook -> percent-format script (sources only), to edit and build
    python tools/nb.py shrink NB.ipynb [...]   # re-encode stored PNG figures as 256-colour palette PNGs
    python tools/nb.py readme                  # README.md from nbs/README.ipynb (the one source of both)

Percent format: a line `# %%` starts a code cell, `# %% [markdown]` a markdown cell whose
lines carry a leading `# `. Notebooks run with the working directory `nbs/`, as nbval runs them.

nbdev's own cleaner nulls execution counts, which makes strict nbval fail every cell with output;
this runner keeps the counts and strips only volatile metadata (timings, kernel versions).

A cell whose source holds the line `# REAL_DATA` shows a real dataset when one is on disk: it runs,
but its outputs are never stored (a clone has no data, and dataset images stay out of the
repository); pair it with `# NBVAL_IGNORE_OUTPUT`. `check` fails on a stored output of such a cell,
on outputs without an execution count, on stored errors, and on notebooks over the size budget
(each at most 1 MB, all of them together at most 5 MB), naming the notebook and its largest cells.

Figures are stored as 256-colour palette PNGs (`run` and `build` re-encode every PNG output over
32 kB; `shrink` does it to stored outputs): about a third of the bytes, and nothing a reader sees
changes.

Printed floats: a compared output (a code cell that nbval checks: it has an execution count and no
`# NBVAL_IGNORE_OUTPUT`, `# NBVAL_SKIP` or `# REAL_DATA`) prints every float with at most
`FLOAT_DIGITS` (4) significant digits: `7.689`, `0.1235`, `46.12`, `1.5e-05`, not `7.6887`. A value
computed in float32 (a loss, a trained weight) differs between CPUs with other vector instructions, thread
counts and machine loads in its sixth or seventh digit; the fewer digits are printed, the rarer a value that
sits on a rounding boundary becomes. A value that needs more digits is checked with `test_close`, and shown
(if at all) in a cell whose output is ignored. `check` names each float over the limit.

The README has one source, `nbs/README.ipynb` (settings.ini's `readme_nb`, what `nbdev_readme`
renders): its markdown cells, joined by blank lines, are `README.md`. `readme` writes the file;
`check` without arguments fails when the two differ.
"""
import hashlib, os, re, sys, time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

KERNEL = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
REAL_DATA = "# REAL_DATA"
NOTEBOOK_BUDGET, TOTAL_BUDGET = 1_000_000, 5_000_000     # bytes


def is_real_data(cell) -> bool:
    return cell.cell_type == "code" and any(l.strip() == REAL_DATA for l in cell.source.splitlines())


def from_percent(text):
    "Cells of a percent-format script."
    cells, kind, buf = [], None, []

    def flush():
        if kind is None: return
        while buf and not buf[-1].strip(): buf.pop()
        while buf and not buf[0].strip(): buf.pop(0)
        if kind == "markdown":
            src = "\n".join(l[2:] if l.startswith("# ") else l.lstrip("#") for l in buf)
            cells.append(nbformat.v4.new_markdown_cell(src))
        else:
            cells.append(nbformat.v4.new_code_cell("\n".join(buf)))

    for line in text.splitlines():
        if line.startswith("# %%"):
            flush()
            kind, buf = ("markdown" if "[markdown]" in line or "[md]" in line else "code"), []
        elif kind is not None:
            buf.append(line)
    flush()
    return cells


def to_percent(nb) -> str:
    "The percent-format script of a notebook's sources (the inverse of `from_percent`)."
    out = []
    for c in nb.cells:
        if c.cell_type == "markdown":
            out.append("# %% [markdown]\n" + "\n".join(f"# {l}" if l else "#" for l in c.source.splitlines()))
        else:
            out.append("# %%\n" + c.source)
    return "\n\n".join(out) + "\n"


def clean(nb, name):
    "Deterministic ids, no volatile metadata."
    nb.metadata = {"kernelspec": KERNEL, "language_info": {"name": "python"}}
    for i, c in enumerate(nb.cells):
        c.id = hashlib.sha1(f"{name}:{i}".encode()).hexdigest()[:8]
        if is_real_data(c): c.outputs, c.execution_count = [], None
        keep = {k: v for k, v in c.metadata.items() if k in ("tags",)}
        c.metadata = keep
        for o in c.get("outputs", []):
            if "metadata" in o and o.get("output_type") != "stream":
                o["metadata"] = {k: v for k, v in o["metadata"].items() if k not in ("execution",)}
    return nb


SHRINK_OVER = 32_000


def shrink_png(b64: str) -> str:
    "A base64 PNG re-encoded with a 256-colour palette when that is smaller (unchanged otherwise)."
    import base64, io
    from PIL import Image
    raw = base64.b64decode(b64)
    if len(raw) <= SHRINK_OVER: return b64
    im = Image.open(io.BytesIO(raw))
    if im.mode == "P": return b64
    buf = io.BytesIO()
    im.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(buf, "PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode() if buf.tell() < len(raw) else b64


def shrink(nb):
    for c in nb.cells:
        for o in c.get("outputs", []):
            if "image/png" in o.get("data", {}): o["data"]["image/png"] = shrink_png(o["data"]["image/png"])
    return nb


def run(path, timeout=1800):
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    t0 = time.time()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    nbformat.write(shrink(clean(nb, path.stem)), path)
    print(f"{path}: ran in {time.time() - t0:.1f}s")


def build(src, dst):
    nb = nbformat.v4.new_notebook()
    nb.cells = from_percent(Path(src).read_text())
    nbformat.write(clean(nb, Path(dst).stem), dst)
    run(dst)


def _cell_bytes(cell) -> int:
    return len(nbformat.writes(nbformat.v4.new_notebook(cells=[cell])))


ROOT = Path(__file__).resolve().parents[1]
README_NB = ROOT / "nbs" / "README.ipynb"


def readme_text() -> str:
    "README.md as `nbs/README.ipynb` renders: its markdown cells joined by blank lines."
    nb = nbformat.read(README_NB, as_version=4)
    return "\n\n".join(c.source.strip() for c in nb.cells if c.cell_type == "markdown") + "\n"


FLOAT_DIGITS = 4
_FLOAT = re.compile(r"(?<![\w.])[-+]?(\d+\.\d+)(?:[eE][-+]?\d+)?(?![\w.])")
_IGNORED = ("# NBVAL_IGNORE_OUTPUT", "# NBVAL_SKIP", REAL_DATA)


def significant_digits(number: str) -> int:
    "Significant digits of a printed decimal mantissa `123.40` (5), `0.0050` (2)."
    return len(number.replace(".", "").lstrip("0"))


def long_floats(cell) -> list[str]:
    "The floats a compared output of `cell` prints with more than `FLOAT_DIGITS` significant digits."
    if cell.cell_type != "code" or cell.execution_count is None: return []
    if any(line.strip() in _IGNORED for line in cell.source.splitlines()): return []
    found = []
    for o in cell.get("outputs", []):
        text = o.get("text") or o.get("data", {}).get("text/plain", "")
        if isinstance(text, list): text = "".join(text)
        found += [m.group(0) for m in _FLOAT.finditer(text) if significant_digits(m.group(1)) > FLOAT_DIGITS]
    return found


def check(paths, budget: bool = True):
    bad, total = 0, 0
    for p in paths:
        nb = nbformat.read(p, as_version=4)
        size = os.path.getsize(p)
        total += size
        for i, c in enumerate(nb.cells):
            if c.cell_type == "code" and c.outputs and c.execution_count is None:
                print(f"{p}: cell {i} has outputs but no execution count"); bad += 1
            if c.cell_type == "code" and any(o.get("output_type") == "error" for o in c.outputs):
                print(f"{p}: cell {i} stored an error"); bad += 1
            if floats := long_floats(c):
                print(f"{p}: cell {i} prints {', '.join(floats[:4])}{' ...' if len(floats) > 4 else ''}: more than "
                      f"{FLOAT_DIGITS} significant digits in a compared output (round, or test_close and ignore the output)")
                bad += 1
            if is_real_data(c) and c.outputs:
                print(f"{p}: cell {i} is marked {REAL_DATA} but stored outputs (run it with tools/nb.py run)"); bad += 1
        if budget and size > NOTEBOOK_BUDGET:
            cells = sorted(((_cell_bytes(c), i) for i, c in enumerate(nb.cells)), reverse=True)[:3]
            shown = ", ".join(f"cell {i} {n / 1e3:.0f} kB" for n, i in cells)
            print(f"{p}: {size / 1e6:.2f} MB, over the {NOTEBOOK_BUDGET / 1e6:.0f} MB budget of a notebook "
                  f"(largest: {shown})"); bad += 1
    if budget and total > TOTAL_BUDGET:
        print(f"the notebooks weigh {total / 1e6:.2f} MB together, over the {TOTAL_BUDGET / 1e6:.0f} MB budget"); bad += 1
    return bad


if __name__ == "__main__":
    cmd, *args = sys.argv[1:] or ["help"]
    if cmd == "build": build(*args)
    elif cmd == "run":
        for a in args: run(a)
    elif cmd == "script":
        src, dst = args
        Path(dst).write_text(to_percent(nbformat.read(src, as_version=4)))
    elif cmd == "shrink":
        for a in args:
            before = os.path.getsize(a)
            nbformat.write(shrink(nbformat.read(a, as_version=4)), a)
            print(f"{a}: {before / 1e3:.0f} kB -> {os.path.getsize(a) / 1e3:.0f} kB")
    elif cmd == "readme":
        (ROOT / "README.md").write_text(readme_text())
    elif cmd == "check":
        paths = args or sorted(str(p) for p in ROOT.joinpath("nbs").glob("*.ipynb"))
        bad = check(paths)
        if not args and (ROOT / "README.md").read_text() != readme_text():
            print("README.md differs from nbs/README.ipynb, its source: edit the notebook, then run tools/nb.py readme")
            bad += 1
        sys.exit(1 if bad else 0)
    else: print(__doc__)
