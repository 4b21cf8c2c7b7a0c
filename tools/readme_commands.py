"""Run every command of the README's ```bash blocks that can run on a CPU, the way CI does.

    python tools/readme_commands.py [--list]

A command line is split at `&&`. Setting up the environment (`python3 -m venv`, activating it,
`pip install`) is what CI has just done, and `pytest` is the test command CI runs next, so those
are listed but not run here. `contextrast_train` with no argument is the main job and runs as
written. Every other training command would train for hours on a GPU: it runs with
`--print-config` added, which parses every flag, resolves the preset and checks the config, then
exits. `torchrun --nproc_per_node N -m contextrast.train ARGS` runs as `python -m contextrast.train
ARGS --print-config` (one process). `contextrast_eval` (or `python -m contextrast.eval`) needs a
checkpoint of such a run: it runs with `--help`. A command that fails stops the script with its exit status.
"""
import re
import shlex
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
SETUP = ("python3 -m venv", "python -m venv", ". .venv/bin/activate", "source .venv/bin/activate", "pip install")


def commands(text: str) -> list[str]:
    "The commands of the ```bash blocks of `text`, comments dropped, each `&&` part on its own."
    out = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"): out += [part.strip() for part in line.split("&&")]
    return out


def cpu_form(command: str) -> list[str] | None:
    "The argv that runs `command` on a CPU in seconds, or `None` when CI covers it elsewhere."
    if command.startswith(SETUP) or command.startswith("pytest"): return None
    argv = shlex.split(command)
    if argv[0] == "torchrun":
        if "-m" not in argv: raise ValueError(f"a torchrun command without -m MODULE: {command}")
        i = argv.index("-m")
        argv = [sys.executable, "-m", argv[i + 1], *argv[i + 2:]]
    if argv == ["contextrast_train"]: return argv                                  # the main job, as written
    if "contextrast_train" in argv[:1] or argv[1:3] == ["-m", "contextrast.train"]:
        return argv + ([] if "--print-config" in argv else ["--print-config"])
    if "contextrast_eval" in argv[:1]: return argv[:1] + ["--help"]
    if argv[1:3] == ["-m", "contextrast.eval"]: return argv[:3] + ["--help"]
    raise ValueError(f"the README command {command!r} has no CPU form here: add one to tools/readme_commands.py")


def main(argv=None) -> int:
    listing = "--list" in (argv if argv is not None else sys.argv[1:])
    for command in commands(README.read_text()):
        run = cpu_form(command)
        print(f"$ {command}" + ("" if run is None else f"\n  runs as: {shlex.join(run)}"
                                if run != shlex.split(command) else ""), flush=True)
        if run is None: print("  (covered by CI's install or test step)", flush=True)
        if run is None or listing: continue
        done = subprocess.run(run, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        tail = "\n".join(done.stdout.strip().splitlines()[-3:])
        print("  " + tail.replace("\n", "\n  "), flush=True)
        if done.returncode != 0:
            print(f"README command failed with exit status {done.returncode}:\n{done.stdout}", file=sys.stderr)
            return done.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
