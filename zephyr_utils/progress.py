"""Progress bars: on by default, all off with one switch, the environment variable ZEPHYR_PROGRESS.

    ZEPHYR_PROGRESS=0 jupyter-book build book      # what `make book` and the tests' book build do

Progress bars are for someone watching a run. In Jupyter they are widgets, and an executed notebook keeps
every widget's state: in the built book, that dead state was most of each chapter's HTML. With
ZEPHYR_PROGRESS=0 (or false, no, off):
- this package draws no progress bar (`bar`, `enabled`);
- the progress bars of transformers, datasets and huggingface_hub are off too (`silence_libraries`, run
  when the package is imported);
- the trainers print one short line per evaluation, with the metrics the book discusses, instead of
  their live progress bar and table of every logged metric (`report_evaluations`).
Unset (or any other value), everything shows as usual.
"""

from __future__ import annotations

import os
import sys

from .runs import display_path

ENV = "ZEPHYR_PROGRESS"
OFF = ("0", "false", "no", "off")


def enabled(progress: bool = True) -> bool:
    """Whether to show a progress bar: `progress`, unless the switch is off."""
    return bool(progress) and os.environ.get(ENV, "").strip().lower() not in OFF


def bar(*args, progress: bool = True, **kwargs):
    """A tqdm progress bar (a widget in Jupyter, text in a terminal), disabled when `enabled(progress)` is false."""
    from tqdm.auto import tqdm

    return tqdm(*args, disable=not enabled(progress), **kwargs)


def silence_libraries() -> None:
    """With the switch off, turn off the progress bars of transformers, datasets and huggingface_hub, through
    their own switches: their environment variables for a library not imported yet (a value set by the
    user is kept), their functions for one that is."""
    if enabled():
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers follows huggingface_hub's setting
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils.logging import disable_progress_bar

        disable_progress_bar()
    if "datasets" in sys.modules:
        from datasets.utils.tqdm import disable_progress_bars as disable_datasets_progress_bars

        disable_datasets_progress_bars()


def report_evaluations(trainer, columns: dict[str, str]) -> None:
    """With the switch off, replace a transformers/TRL trainer's log printer (which `disable_tqdm` puts in
    place of the progress bar) with a table of one line per evaluation: epoch, step and `columns`, a
    mapping of logged metric (e.g. "loss", "eval_loss") -> column title. The train metrics are the last
    ones logged before the evaluation. With the switch on, the trainer is left as it is."""
    if enabled():
        return
    from transformers import PrinterCallback, TrainerCallback

    widths = {key: max(len(title), 8) for key, title in columns.items()}

    class EvaluationLines(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                epochs = args.num_train_epochs
                print(f"training {display_path(args.output_dir)}: {state.max_steps} steps, {epochs:g} "
                      f"epoch{'' if epochs == 1 else 's'}", flush=True)
                print(f"{'epoch':>5}  {'step':>5}  " + "  ".join(f"{columns[k]:>{widths[k]}}" for k in columns), flush=True)

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if not state.is_world_process_zero:
                return
            train = next((h for h in reversed(state.log_history) if "loss" in h), {})
            values = {**{k: v for k, v in train.items() if not k.startswith("eval_")}, **(metrics or {})}
            cells = [f"{values[k]:>{widths[k]}.3f}" if isinstance(values.get(k), (int, float)) else f"{'-':>{widths[k]}}"
                     for k in columns]
            print(f"{state.epoch or 0:>5.2g}  {state.global_step:>5}  " + "  ".join(cells), flush=True)

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(EvaluationLines())
