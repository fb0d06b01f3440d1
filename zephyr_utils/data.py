"""Loading dSFT and preference data from the Hub or from local files of the same schema.

    load_sft_data("HuggingFaceH4/ultrachat_200k", "train_sft")      # the real dataset
    load_sft_data("my_chats.jsonl", "train")                         # a local file, same columns
    load_sft_data("toyworld", "train")                               # a registered name: the toy world's chats

Every row is checked before any trainer sees it: a bad row raises a ValueError naming the file,
the row index and the field, instead of a KeyError from deep inside TRL.
"""

from __future__ import annotations

import json
import numbers
import os
from pathlib import Path

from . import registry
from .chat import validate_messages

LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".arrow": "arrow"}
SFT_COLUMNS = ("prompt", "prompt_id", "messages")
PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")


def load_sft_data(source: str, split: str = "train", world_seed: int = 0):
    """A `datasets.Dataset` in the `ultrachat_200k` schema (prompt, prompt_id, messages), validated."""
    dataset, where = _load(source, split, "sft", world_seed)
    for i, row in enumerate(dataset):
        validate_sft_row(row, i, where)
    return _as_dataset(dataset)


def load_preference_data(source: str, split: str = "train", world_seed: int = 0):
    """A `datasets.Dataset` in the `ultrafeedback_binarized` schema (prompt, chosen, rejected as
    message lists, optional score_chosen/score_rejected), validated."""
    dataset, where = _load(source, split, "preferences", world_seed)
    for i, row in enumerate(dataset):
        validate_preference_row(row, i, where)
    return _as_dataset(dataset)


def _load(source: str, split: str, kind: str, world_seed: int):
    """(dataset, description of where it came from) for a Hub id, a local path or a registered dataset
    name such as "toyworld" (its files, written for toy world `world_seed`)."""
    import datasets

    if source in registry.names("dataset"):
        source = str(registry.lookup("dataset", source)(world_seed=world_seed))
    path = Path(source)
    if kind == "preferences" and path.is_dir() and (path / "preferences").is_dir():
        path = path / "preferences"
    elif kind == "sft" and path.is_dir() and (path / "sft").is_dir():
        path = path / "sft"
    if path.is_dir():
        path = _split_file(path, split)
    if path.is_file():
        fmt = LOCAL_FORMATS.get(path.suffix)
        if fmt is None:
            raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(LOCAL_FORMATS)}")
        try:
            if fmt == "arrow":
                dataset = datasets.Dataset.from_file(str(path))
            elif fmt == "json":  # read rows as written, so a missing field is not filled with null
                return _read_json_rows(path), str(path)
            else:
                dataset = datasets.load_dataset(fmt, data_files=str(path), split="train")
        except ValueError:
            raise
        except Exception as err:  # noqa: BLE001 - re-raised with the file named
            raise ValueError(f"{path}: could not be read as {fmt}: {err}") from err
        return dataset, str(path)
    if source.startswith((".", "/", "~")) or source.count("/") != 1 or path.suffix in LOCAL_FORMATS:
        raise ValueError(f"{source}: no such file or directory (and not a Hub id of the form owner/name)")
    return datasets.load_dataset(source, split=split), f"{source} (split {split})"


class _Rows(list):
    """Rows read from a JSON file: validated first, then turned into a `datasets.Dataset`."""


def _read_json_rows(path: Path) -> _Rows:
    text = path.read_text()
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            return _Rows(json.loads(text))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: could not be read as json: {err}") from err
    rows = _Rows()
    for line_no, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: could not be read as json: line {line_no}: {err.msg}") from err
    return rows


def _as_dataset(rows):
    import datasets

    return datasets.Dataset.from_list(rows) if isinstance(rows, _Rows) else rows


def _split_file(directory: Path, split: str) -> Path:
    for ext in LOCAL_FORMATS:
        candidate = directory / f"{split}{ext}"
        if candidate.is_file():
            return candidate
    found = sorted(p.name for p in directory.iterdir() if p.suffix in LOCAL_FORMATS)
    raise ValueError(
        f"{directory}: no file for split {split!r} (looked for {split}.jsonl/.json/.parquet/.arrow); "
        f"found: {', '.join(found) or 'nothing'}"
    )


def _require(row, i: int, where: str, name: str, kind: type):
    if not isinstance(row, dict):
        raise ValueError(f"{where}: row {i} is a {type(row).__name__}, not a record with named fields")
    if row.get(name) is None:
        present = ", ".join(k for k, v in row.items() if v is not None)
        raise ValueError(f"{where}: row {i} has no field {name!r} (missing or null); present: {present}")
    value = row[name]
    if not isinstance(value, kind):
        raise ValueError(f"{where}: row {i}, field {name!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


def validate_sft_row(row: dict, i: int, where: str) -> None:
    prompt = _require(row, i, where, "prompt", str)
    _require(row, i, where, "prompt_id", str)
    messages = _require(row, i, where, "messages", list)
    if not prompt.strip():
        raise ValueError(f"{where}: row {i}, field 'prompt' is empty")
    try:
        validate_messages(messages, last_role="assistant", where="messages")
    except ValueError as err:
        raise ValueError(f"{where}: row {i}, field {err} — fix or drop this row") from None


def validate_preference_row(row: dict, i: int, where: str) -> None:
    prompt = _require(row, i, where, "prompt", str)
    if not prompt.strip():
        raise ValueError(f"{where}: row {i}, field 'prompt' is empty")
    pair = {}
    for name in ("chosen", "rejected"):
        messages = _require(row, i, where, name, list)
        if not any(isinstance(m, dict) and m.get("role") == "user" for m in messages):
            raise ValueError(f"{where}: row {i}, field {name!r} has no user turn: the prompt turn is missing "
                             "(chosen and rejected must be full conversations: prompt turns, then the answer)")
        try:
            validate_messages(messages, last_role="assistant", where=name)
        except ValueError as err:
            raise ValueError(f"{where}: row {i}, field {err} — fix or drop this row") from None
        pair[name] = messages
    if pair["chosen"][:-1] != pair["rejected"][:-1]:
        raise ValueError(f"{where}: row {i}: 'chosen' and 'rejected' must share the same prompt turns")
    if pair["chosen"][-1]["content"].strip() == pair["rejected"][-1]["content"].strip():
        raise ValueError(f"{where}: row {i}: 'chosen' and 'rejected' answers are identical; a pair must differ — drop this row")
    for name in ("score_chosen", "score_rejected"):
        if name in row and row[name] is not None and (not isinstance(row[name], numbers.Real) or isinstance(row[name], bool)):
            raise ValueError(f"{where}: row {i}, field {name!r} must be a number, got {row[name]!r}")


def write_jsonl(rows: list[dict], path: str | os.PathLike) -> Path:
    """Write rows as JSON lines atomically (write to a temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f"{path.suffix}.{os.getpid()}.tmp")  # one per process: ranks may race
    with tmp.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    tmp.replace(path)
    return path
