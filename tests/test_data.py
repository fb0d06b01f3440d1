import json

import pytest

from zephyr_utils.data import load_preference_data, load_sft_data, write_jsonl


def sft_row(i=0, **changes):
    row = {"prompt": f"What is {i}?", "prompt_id": str(i),
           "messages": [{"role": "user", "content": f"What is {i}?"}, {"role": "assistant", "content": f"It is {i}."}]}
    row.update(changes)
    return row


def pref_row(i=0, **changes):
    row = {"prompt": f"Q{i}?", "prompt_id": str(i), "score_chosen": 9.0, "score_rejected": 4.5,
           "chosen": [{"role": "user", "content": f"Q{i}?"}, {"role": "assistant", "content": "Good."}],
           "rejected": [{"role": "user", "content": f"Q{i}?"}, {"role": "assistant", "content": "Bad."}]}
    row.update(changes)
    return row


def write(tmp_path, rows, name="data.jsonl"):
    return str(write_jsonl(rows, tmp_path / name))


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet", "arrow"])
def test_local_files_of_every_format_load(tmp_path, fmt):
    import datasets

    rows = [sft_row(i) for i in range(5)]
    path = tmp_path / f"train.{fmt}"
    ds = datasets.Dataset.from_list(rows)
    if fmt == "jsonl":
        write_jsonl(rows, path)
    elif fmt == "json":
        path.write_text(json.dumps(rows))
    elif fmt == "parquet":
        ds.to_parquet(str(path))
    else:
        ds.save_to_disk(str(tmp_path / "saved"))
        path = next((tmp_path / "saved").glob("*.arrow")).rename(path)
    loaded = load_sft_data(str(path), "train")
    assert len(loaded) == 5 and loaded[3]["messages"][1]["content"] == "It is 3."
    # a directory is looked up by split name
    assert len(load_sft_data(str(tmp_path), "train")) == 5


def test_toyworld_source_writes_and_loads_real_files():
    train = load_sft_data("toyworld", "train")
    test = load_sft_data("toyworld", "test")
    assert len(train) > 500 and len(test) > 20
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}


def test_hub_ids_go_to_load_dataset(monkeypatch):
    import datasets

    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or datasets.Dataset.from_list([pref_row()]))
    ds = load_preference_data("HuggingFaceH4/ultrafeedback_binarized", "train_prefs")
    assert calls == [(("HuggingFaceH4/ultrafeedback_binarized",), {"split": "train_prefs"})] and len(ds) == 1


SFT_BAD = [
    (lambda r: r.pop("messages"), "row 2 has no field 'messages'"),
    (lambda r: r.update(messages=None), r"row 2 has no field 'messages' \(missing or null\)"),
    (lambda r: r.pop("prompt"), "row 2 has no field 'prompt'"),
    (lambda r: r.update(prompt=""), "row 2, field 'prompt' is empty"),
    (lambda r: r.update(prompt_id=7), "row 2, field 'prompt_id' must be str"),
    (lambda r: r.update(messages="hi"), "row 2, field 'messages' must be list"),
    (lambda r: r.update(messages=[]), r"row 2, field messages is empty"),
    (lambda r: r["messages"].pop(), r"row 2, field messages ends with a 'user' message"),
    (lambda r: r["messages"][0].update(role="human"), r"row 2, field messages\[0\]\['role'\] is 'human'"),
    (lambda r: r["messages"][1].update(content=""), r"row 2, field messages\[1\]\['content'\] is empty"),
    (lambda r: r["messages"].insert(1, {"role": "user", "content": "again"}), r"row 2, field messages\[1\]\['role'\] is 'user' but 'assistant'"),
]


def expect_named_error(tmp_path, rows, load, match):
    """Write rows as JSONL and check loading them fails with `match` and the file's name."""
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=match) as err:
        load(str(path), "train")
    assert "bad.jsonl" in str(err.value)


@pytest.mark.parametrize("corrupt, match", SFT_BAD)
def test_bad_sft_rows_name_file_row_and_field(tmp_path, corrupt, match):
    rows = [sft_row(i) for i in range(4)]
    corrupt(rows[2])
    expect_named_error(tmp_path, rows, load_sft_data, match)


PREF_BAD = [
    (lambda r: r.pop("chosen"), "row 1 has no field 'chosen'"),
    (lambda r: r.update(rejected="Bad."), "row 1, field 'rejected' must be list"),
    (lambda r: r["chosen"][1].update(content=" "), r"row 1, field chosen\[1\]\['content'\] is empty"),
    (lambda r: r["rejected"].__setitem__(1, {"role": "assistant", "content": "Good."}), "answers are identical"),
    (lambda r: r.update(chosen=r["chosen"][1:]), "row 1, field 'chosen' has no user turn: the prompt turn is missing"),
    (lambda r: r.update(rejected=[{"role": "system", "content": "x"}, {"role": "assistant", "content": "Bad."}]),
     "field 'rejected' has no user turn"),
    (lambda r: r["rejected"][0].update(content="Another question?"), "must share the same prompt turns"),
    (lambda r: r.update(score_chosen="high"), "row 1, field 'score_chosen' must be a number"),
    (lambda r: r.update(prompt="  "), "row 1, field 'prompt' is empty"),
]


@pytest.mark.parametrize("corrupt, match", PREF_BAD)
def test_bad_preference_rows_name_file_row_and_field(tmp_path, corrupt, match):
    rows = [pref_row(i) for i in range(3)]
    corrupt(rows[1])
    expect_named_error(tmp_path, rows, load_preference_data, match)


def test_bad_sources(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="unsupported file type '.txt'"):
        load_sft_data(str(tmp_path / "notes.txt"))
    with pytest.raises(ValueError, match="no such file"):
        load_sft_data(str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match="no file for split 'train_sft'.*found: nothing"):
        load_sft_data(str(tmp_path), "train_sft")
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match="broken.jsonl: could not be read as json"):
        load_sft_data(str(tmp_path / "broken.jsonl"))
