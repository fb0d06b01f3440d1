"""Run manifests and the hand-off between stages: a consumer finds its input from the manifests under
runs/<scale>/ (or a path given explicitly), never from the producer's shipped recipe. The runs here are
directories with fake outputs and real manifests; the training tests (test_sft, test_dpo) check the
manifests real runs write."""

import json
from datetime import datetime

import pytest

from zephyr_utils import runs
from zephyr_utils.aif import pool_models
from zephyr_utils.config import load_recipe
from zephyr_utils.runs import RunNotFoundError, StaleRunError, find, manifest_digest, resolve, write_manifest


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ZEPHYR_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


def fake_run(stage: str, inputs: dict, name: str | None = None, **fields):
    """A finished run of `stage` at tiny scale: a directory with a fake output and its manifest."""
    recipe = load_recipe("eval" if stage == "table3" else stage, "tiny", **fields)
    out = runs.stage_dir(recipe, name or stage)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text("{}")
    write_manifest(out, stage, recipe, inputs, {"model": "."}, name)
    return out


def test_stage_dir_defaults_under_runs(runs_dir):
    assert runs.stage_dir(load_recipe("sft", "demo"), "sft") == runs_dir / "demo" / "sft"
    assert runs.stage_dir(load_recipe("sft", "demo", preset="24gb"), "sft") == runs_dir / "demo-24gb" / "sft"
    assert runs.stage_dir(load_recipe("sft", "demo", output_dir="elsewhere"), "sft").name == "elsewhere"


def test_manifest_holds_the_recipe_versions_and_inputs_with_their_digests(runs_dir):
    sft = fake_run("sft", {"model": "org/base", "dataset": "toyworld"}, learning_rate=1e-4)
    aif = fake_run("aif", {"prompts": "toyworld", "pool:sft": str(sft)})
    (aif / "preferences").mkdir()
    dpo = fake_run("dpo", {"model": str(sft), "dataset": str(aif / "preferences"), "unused": None}, world_seed=0)
    manifest = json.loads((dpo / "manifest.json").read_text())
    assert (manifest["stage"], manifest["name"], manifest["scale"], manifest["preset"], manifest["world_seed"]) == (
        "dpo", "dpo", "tiny", "", 0)
    assert manifest["recipe"]["beta"] == load_recipe("dpo", "tiny").beta and "output_dir" not in manifest["recipe"]
    assert set(manifest["versions"]) >= {"torch", "transformers", "trl"}
    assert manifest["outputs"] == {"model": "."}
    assert datetime.fromisoformat(manifest["date"]).tzinfo is not None
    # each input with the digest of the manifest of the run it belongs to (the AIF run holds preferences/)
    assert manifest["inputs"] == {"model": {"path": str(sft), "digest": manifest_digest(sft)},
                                  "dataset": {"path": str(aif / "preferences"), "digest": manifest_digest(aif)}}
    assert len({manifest_digest(sft), manifest_digest(aif), manifest_digest(dpo)}) == 3
    sft_manifest = json.loads((sft / "manifest.json").read_text())
    assert sft_manifest["recipe"]["learning_rate"] == 1e-4
    assert sft_manifest["inputs"]["model"] == {"path": "org/base", "digest": None}  # a Hub id is made by no run here


def test_a_run_written_elsewhere_is_found_by_its_consumer(runs_dir, tmp_path):
    """`zephyr sft --set output_dir=...`: the dDPO stage and the AIF pool still take that run, the newest."""
    older = fake_run("sft", {"model": "org/base"})
    elsewhere = fake_run("sft", {"model": "org/base"}, output_dir=str(tmp_path / "my-sft"))
    assert find("sft", "tiny") == elsewhere
    assert json.loads((runs_dir / "tiny" / "latest.json").read_text()) == {"sft": str(elsewhere)}
    assert resolve(load_recipe("dpo", "tiny").model_name_or_path, "tiny") == str(elsewhere)  # dpo's "sft"
    assert pool_models(load_recipe("aif", "tiny", pool=["sft@0.7", "sft@1.0", "teacher"])) == {"sft": str(elsewhere)}
    again = fake_run("sft", {"model": "org/base"})  # the default directory, written last, is the newest again
    assert again == older and find("sft", "tiny") == older


def test_a_named_run_of_a_stage_is_not_taken_for_that_stage(runs_dir):
    """Chapter 4's dDPO-without-dSFT ablation is a dDPO run named dpo_only: `dpo` still means dSFT + dDPO."""
    dpo = fake_run("dpo", {"model": "org/sft"})
    ablation = fake_run("dpo", {"model": "org/base"}, name="dpo_only")
    assert ablation == runs_dir / "tiny" / "dpo_only"
    assert find("dpo", "tiny") == dpo and find("dpo_only", "tiny") == ablation


def test_a_missing_input_names_the_command_that_makes_it(runs_dir):
    with pytest.raises(RunNotFoundError, match=r"no finished dSFT run for tiny scale under runs/tiny: run "
                                               r"`zephyr sft --scale tiny` first, or pass a path$"):
        resolve("sft", "tiny")
    with pytest.raises(RunNotFoundError, match=r"`zephyr aif --scale demo --preset 24gb`"):
        resolve("aif", "demo", "24gb")  # dDPO's dataset
    with pytest.raises(RunNotFoundError, match=r"`zephyr sft --scale tiny`"):
        pool_models(load_recipe("aif", "tiny", pool=["teacher", "sft@0.7"]))  # before any sampling
    with pytest.raises(RunNotFoundError, match=r"`zephyr sft --scale tiny`"):
        resolve("base", "tiny")  # the model dSFT started from: known once dSFT has run
    # a run that did not finish: its directory has outputs but no manifest (rerunning a stage removes it first)
    sft = fake_run("sft", {"model": "org/base"})
    runs.begin(sft)
    assert (sft / "config.json").is_file()
    with pytest.raises(RunNotFoundError, match=r"runs/tiny/sft has no manifest.json: that run did not finish"):
        find("sft", "tiny")


def test_the_base_model_is_the_one_the_dsft_run_started_from(runs_dir, tmp_path):
    fake_run("sft", {"model": "org/some-base"})
    assert resolve("base", "tiny") == "org/some-base"  # not the shipped sft recipe's model_name_or_path ("tiny")
    gone = tmp_path / "deleted-base"
    fake_run("sft", {"model": str(gone)})
    with pytest.raises(RunNotFoundError, match=r"deleted-base, no longer exists: rerun `zephyr sft --scale tiny`"):
        resolve("base", "tiny")


def test_an_explicit_path_is_used_as_given(runs_dir, tmp_path):
    data = tmp_path / "my-prefs"
    data.mkdir()
    assert resolve(str(data), "tiny") == str(data)
    assert resolve("HuggingFaceH4/ultrafeedback_binarized", "tiny") == "HuggingFaceH4/ultrafeedback_binarized"
    run = fake_run("sft", {"model": "org/base"}, output_dir=str(tmp_path / "given"), world_seed=1)
    with pytest.raises(StaleRunError, match="toy world 1"):  # a run given by path is checked all the same
        resolve(str(run), "tiny", world_seed=0)


def test_an_input_made_from_a_changed_upstream_run_is_stale(runs_dir):
    """dDPO recorded the dSFT run it was trained from; dSFT made again with another recipe makes it stale."""
    fake_run("sft", {"model": "org/base"})
    dpo = fake_run("dpo", {"model": str(find("sft", "tiny"))})
    fake_run("sft", {"model": "org/base"})  # made again, from the same recipe and inputs: the same run
    assert resolve("dpo", "tiny") == str(dpo)
    fake_run("sft", {"model": "org/base"}, learning_rate=1e-3)
    with pytest.raises(StaleRunError, match=r"runs/tiny/dpo is stale: its model input runs/tiny/sft has changed since "
                                            r"it was made .* rerun `zephyr dpo --scale tiny`"):
        resolve("dpo", "tiny")
    fake_run("dpo", {"model": str(find("sft", "tiny"))})
    assert resolve("dpo", "tiny") == str(dpo)


def test_an_input_of_another_toy_world_is_stale(runs_dir):
    fake_run("sft", {"model": "org/base"}, world_seed=1)
    assert resolve("sft", "tiny", world_seed=1) == str(runs_dir / "tiny" / "sft")
    with pytest.raises(StaleRunError, match=r"runs/tiny/sft was made for toy world 1, but this recipe has world_seed 0: "
                                            r"run `zephyr sft --scale tiny --set world_seed=0`"):
        pool_models(load_recipe("aif", "tiny", pool=["sft@0.7", "teacher"]))  # world_seed 0


def test_an_index_entry_whose_run_is_gone_falls_back_to_the_default(runs_dir, tmp_path):
    import shutil

    default = fake_run("sft", {"model": "org/base"})
    elsewhere = fake_run("sft", {"model": "org/base"}, output_dir=str(tmp_path / "elsewhere"))
    assert find("sft", "tiny") == elsewhere
    shutil.rmtree(elsewhere)
    assert find("sft", "tiny") == default


def test_a_stale_run_written_elsewhere_is_told_to_rerun_there(runs_dir, tmp_path):
    sft = fake_run("sft", {"model": "org/base"})
    fake_run("dpo", {"model": str(sft)}, output_dir=str(tmp_path / "my-dpo"))
    fake_run("sft", {"model": "org/base"}, seed=7)
    with pytest.raises(StaleRunError, match=rf"rerun `zephyr dpo --scale tiny --set output_dir={tmp_path / 'my-dpo'}`"):
        resolve("dpo", "tiny")
