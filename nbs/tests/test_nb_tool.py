"""tools/nb.py check: a compared output may print floats with at most FLOAT_DIGITS significant digits."""
import importlib.util
from pathlib import Path

import nbformat

spec = importlib.util.spec_from_file_location("nbtool", Path(__file__).resolve().parents[2] / "tools" / "nb.py")
nbtool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(nbtool)


def _notebook(path, source, text):
    cell = nbformat.v4.new_code_cell(source, execution_count=1,
                                     outputs=[nbformat.v4.new_output("stream", name="stdout", text=text)])
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), path)
    return str(path)


def test_long_floats_in_compared_outputs_are_rejected(tmp_path, capsys):
    assert nbtool.significant_digits("7.6887") == 5 and nbtool.significant_digits("0.0050") == 2
    flaky = _notebook(tmp_path / "a.ipynb", "print(loss)", "loss 7.6887 after 2 steps\n")
    assert nbtool.check([flaky], budget=False) == 1
    assert "cell 0 prints 7.6887: more than 4 significant digits" in capsys.readouterr().out
    # four digits, an ignored output, versions and integers pass
    assert nbtool.check([_notebook(tmp_path / "b.ipynb", "print(loss)", "loss 7.689, 0.1235, 1.5e-05, 46.12%\n")],
                        budget=False) == 0
    assert nbtool.check([_notebook(tmp_path / "c.ipynb", "# NBVAL_IGNORE_OUTPUT\nprint(loss)", "7.6887\n")],
                        budget=False) == 0
    assert nbtool.check([_notebook(tmp_path / "d.ipynb", "print(v)", "torch 2.14.1, 123456 pixels, 1.2.3.4\n")],
                        budget=False) == 0
