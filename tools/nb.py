"""Build, run and check the project's notebooks.

    python tools/nb.py build SRC.py NB.ipynb   # percent-format script -> notebook, then run it
    python tools/nb.py run NB.ipynb [...]      # execute top to bottom in place, keep outputs and counts
    python tools/nb.py check [NB.ipynb ...]    # every output has an execution count, metadata is clean

Percent format: a line `# %%` starts a code cell, `# %% [markdown]` a markdown cell whose
lines carry a leading `# `. Notebooks run with the working directory `nbs/`, as nbval runs them.

nbdev's own cleaner nulls execution counts, which makes strict nbval fail every cell with output;
this runner keeps the counts and strips only volatile metadata (timings, kernel versions).
"""
import hashlib, sys, time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

KERNEL = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


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


def clean(nb, name):
    "Deterministic ids, no volatile metadata."
    nb.metadata = {"kernelspec": KERNEL, "language_info": {"name": "python"}}
    for i, c in enumerate(nb.cells):
        c.id = hashlib.sha1(f"{name}:{i}".encode()).hexdigest()[:8]
        keep = {k: v for k, v in c.metadata.items() if k in ("tags",)}
        c.metadata = keep
        for o in c.get("outputs", []):
            if "metadata" in o and o.get("output_type") != "stream":
                o["metadata"] = {k: v for k, v in o["metadata"].items() if k not in ("execution",)}
    return nb


def run(path, timeout=1800):
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    t0 = time.time()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    nbformat.write(clean(nb, path.stem), path)
    print(f"{path}: ran in {time.time() - t0:.1f}s")


def build(src, dst):
    nb = nbformat.v4.new_notebook()
    nb.cells = from_percent(Path(src).read_text())
    nbformat.write(clean(nb, Path(dst).stem), dst)
    run(dst)


def check(paths):
    bad = 0
    for p in paths:
        nb = nbformat.read(p, as_version=4)
        for i, c in enumerate(nb.cells):
            if c.cell_type == "code" and c.outputs and c.execution_count is None:
                print(f"{p}: cell {i} has outputs but no execution count"); bad += 1
            if c.cell_type == "code" and any(o.get("output_type") == "error" for o in c.outputs):
                print(f"{p}: cell {i} stored an error"); bad += 1
    return bad


if __name__ == "__main__":
    cmd, *args = sys.argv[1:] or ["help"]
    if cmd == "build": build(*args)
    elif cmd == "run":
        for a in args: run(a)
    elif cmd == "check":
        paths = args or sorted(str(p) for p in Path(__file__).resolve().parents[1].joinpath("nbs").glob("*.ipynb"))
        sys.exit(1 if check(paths) else 0)
    else: print(__doc__)
