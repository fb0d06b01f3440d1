"""The book's figures."""

from __future__ import annotations


def plot_loss(log_history: list[dict], ax=None, title: str = "training loss"):
    """Train loss per logging step, and eval loss where the trainer evaluated."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), "o--", label="held-out loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.legend()
    return ax


def plot_rates(rates: dict[str, float], ax=None, title: str = "", ylabel: str = "share of answers"):
    """A bar per model, labelled with its value as a percentage."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(4.5, 3.5))[1]
    bars = ax.bar(list(rates), list(rates.values()), color=["#999999", "#3b7dd8", "#e07b39", "#4caf50"][: len(rates)])
    ax.bar_label(bars, labels=[f"{v:.0%}" for v in rates.values()])
    ax.set_ylim(0, 1.1)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return ax
