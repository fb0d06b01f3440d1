"""The chapters as the book executes them (tiny scale, in order): what each one shows."""

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def executed(built_book, name):
    return nbformat.read(built_book / "jupyter_execute" / "notebooks" / f"{name}.ipynb", as_version=4)


def stdout_of(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("name") == "stdout")


def images_of(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_clean_and_parameterised(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not any(c.get("outputs") or c.get("execution_count") for c in code), "committed with outputs"
    assert any("parameters" in c.metadata.get("tags", []) for c in code), "no papermill parameters cell"
    assert "pip" in code[0].source and "find_spec" in code[0].source, "the first cell must install the package outside the repo"
    assert "colab.research.google.com" in nb.cells[0].source, "no Colab badge"


def test_01_dsft(built_book):
    nb = executed(built_book, "01_dsft")
    base, sft = map(float, re.search(r"base ([\d.]+)%, dSFT ([\d.]+)%", stdout_of(nb)).groups())
    print(f"\nchapter 1: template adherence base {base}%, dSFT {sft}%")
    assert sft >= 95 and base < 20
    assert images_of(nb) >= 2  # loss curve and adherence bars


def test_02_aif(built_book):
    out = stdout_of(executed(built_book, "02_aif"))
    pairs = int(re.search(r"'pairs': (\d+)", out).group(1))
    means = {m: float(s) for m, s in re.findall(r"(\S+): mean judge score ([\d.]+)", out)}
    print(f"\nchapter 2: {pairs} pairs; pool means {means}")
    assert pairs >= 500 and len(means) == 4 and max(means.values()) - min(means.values()) > 2
    good, injected = map(float, re.findall(r"=> parsed rating: ([\d.]+)", out))
    assert good == 10 and injected <= 3  # the answer that rated itself 10 was not believed
    assert images_of(executed(built_book, "02_aif")) >= 1


def test_03_ddpo(built_book):
    nb = executed(built_book, "03_ddpo")
    out = stdout_of(nb)
    difference = float(re.search(r"difference ([\d.e+-]+)", out).group(1))
    sft, dpo = map(float, re.search(r"dSFT ([\d.]+)%, dDPO ([\d.]+)%", out).groups())
    print(f"\nchapter 3: loss by hand vs TRL differ by {difference:.1e}; held-out preference accuracy dSFT {sft}%, dDPO {dpo}%")
    assert difference < 1e-4 and dpo > sft + 20
    assert images_of(nb) >= 1


def test_04_evaluation(built_book):
    nb = executed(built_book, "04_evaluation")
    out = stdout_of(nb)
    difference, low, high = map(float, re.search(r"judge score: ([+-][\d.]+) \(95% paired bootstrap CI \[([+-][\d.]+), ([+-][\d.]+)\]", out).groups())
    adherence = {m.strip(): float(v) for m, v in re.findall(r"^\s*(.+?): template adherence ([\d.]+)%", out, re.M)}
    print(f"\nchapter 4: dDPO - dSFT = {difference:+.2f} [{low:+.2f}, {high:+.2f}]; adherence {adherence}")
    assert low > 0  # dDPO beats dSFT with a 95% paired-bootstrap CI above zero
    assert adherence["dSFT + dDPO"] >= 90 and adherence["dDPO only (no dSFT)"] <= adherence["dSFT + dDPO"] - 50
    assert "4.76" in "".join(str(o.get("data", {})) for c in nb.cells for o in c.get("outputs", []))  # the paper's row
    assert images_of(nb) >= 1
