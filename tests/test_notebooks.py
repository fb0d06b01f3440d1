"""The chapters as the book executes them (tiny scale, in order): what each one shows."""

import json
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def executed(built_book, name):
    return nbformat.read(built_book / "jupyter_execute" / "notebooks" / f"{name}.ipynb", as_version=4)


def images_of(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_clean_and_parameterised(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not any(c.get("outputs") or c.get("execution_count") for c in code), "committed with outputs"
    assert any("parameters" in c.metadata.get("tags", []) for c in code), "no papermill parameters cell"
    assert "pip install -e" in code[0].source and "find_spec" in code[0].source, "the first cell must say how to install the package"
    text = "".join(c.source for c in nb.cells)
    assert "github.com" not in text and "git+" not in text, "a notebook must not install from or link to another repository"


def results(built_book, chapter):
    """What a chapter measured, as it saved it (zephyr_utils.evaluation.save_results) during the book build."""
    return json.loads((built_book.parent / "runs" / "tiny" / "book" / f"{chapter}.json").read_text())


def test_01_dsft(built_book):
    r = results(built_book, "01_dsft")
    adherence, format_only = r["adherence"], r["format_only"]
    print(f"\nchapter 1: template adherence on {r['held_out']} prompts {adherence} (format only: {format_only})")
    assert format_only["sft"] >= 0.95 and format_only["base"] < 0.2 and adherence["sft"] >= 0.8 and adherence["base"] < 0.2
    assert images_of(executed(built_book, "01_dsft")) >= 2  # loss curve and adherence bars


def test_02_aif(built_book):
    summary = json.loads((built_book.parent / "runs" / "tiny" / "aif" / "summary.json").read_text())
    print(f"\nchapter 2: {summary['pairs']} pairs of {summary['prompts']} prompts")
    # prompts whose four answers all tie give no pair: 56-78% of the prompts gave one in the seed study
    assert summary["pairs"] >= 0.5 * summary["prompts"] and summary["missing_ratings"] == 0
    ratings = results(built_book, "02_aif")["truthfulness"]
    assert ratings["good"] == 5 and ratings["injected"] <= 3  # aspect ratings are 1-5; the answer that rated itself 10 was not believed
    assert images_of(executed(built_book, "02_aif")) >= 1


def test_03_ddpo(built_book):
    r = results(built_book, "03_ddpo")
    loss, accuracy = r["dpo_loss"], r["preference_accuracy"]
    print(f"\nchapter 3: DPO loss by hand {loss['ours']:.6f} vs TRL {loss['trl']:.6f}; held-out preference accuracy {accuracy}")
    assert abs(loss["ours"] - loss["trl"]) < 1e-4
    # the dSFT model is its own reference: every reward is 0, every pair a tie, accuracy one half by construction
    assert accuracy["sft"] == 0.5 and accuracy["dpo"] > 0.7
    assert images_of(executed(built_book, "03_ddpo")) >= 1


def test_04_evaluation(built_book):
    """Chapter 4's Table 3, read from the results file `run_table3` wrote during the book build. One run is
    one draw: bench/results/study.json shows the same claims across ten (see bench/study.py)."""
    nb = executed(built_book, "04_evaluation")
    table3 = json.loads((built_book.parent / "runs" / "tiny" / "table3" / "results.json").read_text())
    m, d = table3["models"], table3["dpo_vs_sft"]
    print(f"\nchapter 4: dDPO - dSFT = {d['difference']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}], "
          f"W/L/T {d['wins']}/{d['losses']}/{d['ties']}; scores {({k: round(v['score'], 2) for k, v in m.items()})}; "
          f"adherence {({k: round(v['adherence'], 2) for k, v in m.items()})}")
    assert d["ci95"][0] > 0  # dDPO beats dSFT with a 95% paired-bootstrap CI above zero
    assert d["wins"] > d["losses"]
    assert m["dpo"]["adherence"] >= 0.8 and m["dpo_only"]["adherence"] <= 0.2 and m["base"]["adherence"] <= 0.2
    assert m["sft"]["score"] >= m["idk"]["score"] + 1.5
    assert len(table3["epochs"]) >= 3 and all(e["train_reward_accuracy"] is not None for e in table3["epochs"])
    # the last epoch's checkpoint holds the final weights: graded once, as the dDPO row (the others on their own)
    graded = json.loads((built_book.parent / "runs" / "tiny" / "table3" / "manifest.json").read_text())["inputs"]
    last = len(table3["epochs"])
    assert f"dpo_epoch{last}" not in graded and {f"dpo_epoch{k}" for k in range(1, last)} <= set(graded)
    assert table3["epochs"][-1]["score"] == m["dpo"]["score"]
    assert images_of(nb) >= 2  # scores and pairwise; the epochs plot
