"""The book's figures.

They are drawn WIDTH inches wide: at matplotlib's 100 dpi that is about the width of the book's text column
(about 690 px at a 1280 px wide window), so a figure is shown at nearly its own size and its 10-point text
stays legible. Several panels are stacked one above the other (`stacked`), not squeezed side by side.
"""

from __future__ import annotations

WIDTH = 7.0  # inches


def figure(height: float = 3.5):
    """(figure, axes): one panel, WIDTH wide, with matplotlib's constrained layout."""
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(WIDTH, height), layout="constrained")


def stacked(panels: int, height: float = 3.2):
    """(figure, axes): `panels` panels one above the other, each `height` inches high, WIDTH wide."""
    import matplotlib.pyplot as plt

    return plt.subplots(panels, 1, figsize=(WIDTH, height * panels), layout="constrained")


def plot_loss(log_history: list[dict], ax=None, title: str = "training loss"):
    """Train loss per logging step, and eval loss where the trainer evaluated."""
    ax = ax or figure()[1]
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
    ax = ax or figure()[1]
    bars = ax.bar(list(rates), list(rates.values()), color=["#999999", "#3b7dd8", "#e07b39", "#4caf50"][: len(rates)])
    ax.bar_label(bars, labels=[f"{v:.0%}" for v in rates.values()])
    ax.set_ylim(0, 1.1)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return ax


def plot_score_distributions(scores_by_model: dict[str, list[float]], ax=None, title: str = "judge scores per pool model"):
    """A box per model of its mean aspect ratings, with the mean marked."""
    ax = ax or figure()[1]
    names = list(scores_by_model)
    ax.boxplot([scores_by_model[n] for n in names], showmeans=True)
    ax.set_xticks(range(1, len(names) + 1), names)
    ax.set_ylabel("mean aspect rating (1-5)")
    ax.set_title(title)
    return ax


def plot_margins(pairs: list[dict], ax=None, title: str = "chosen minus rejected score"):
    """Histogram of score_chosen - score_rejected over the binarized pairs."""
    ax = ax or figure()[1]
    margins = [p["score_chosen"] - p["score_rejected"] for p in pairs]
    ax.hist(margins, bins=18, color="#3b7dd8")
    ax.set_xlabel("score margin")
    ax.set_ylabel("pairs")
    ax.set_title(title)
    return ax


def plot_dpo_curves(log_history: list[dict], axes=None):
    """TRL's DPO metrics over training: rewards, margins, accuracies and loss, train and held-out."""
    if axes is None:
        _, axes = stacked(3, height=2.8)
    for prefix, style in (("", "-"), ("eval_", "o--")):
        def series(key):
            return [(h["step"], h[prefix + key]) for h in log_history if prefix + key in h]

        where = "train" if not prefix else "held-out"
        for key, color in (("rewards/chosen", "C0"), ("rewards/rejected", "C1"), ("rewards/margins", "C2")):
            if series(key):  # one colour per reward, train and held-out alike
                axes[0].plot(*zip(*series(key)), style, color=color, label=f"{key.split('/')[1]} ({where})")
        if series("rewards/accuracies"):
            axes[1].plot(*zip(*series("rewards/accuracies")), style, label=where)
        if series("loss"):
            axes[2].plot(*zip(*series("loss")), style, label=where)
    axes[0].axhline(0, color="grey", lw=0.5)
    for ax, title in zip(axes, ("implicit rewards", "reward accuracy", "DPO loss")):
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the panel, not over the curves
    axes[1].set_ylim(0, 1.05)
    return axes


def plot_scores_with_ci(scores: dict[str, tuple[float, float, float]], ax=None, title: str = "judge score (95% CI)"):
    """Bars of (score, low, high) per model, with the interval as error bars."""
    ax = ax or figure()[1]
    names = list(scores)
    means = [scores[n][0] for n in names]
    errors = [[scores[n][0] - scores[n][1] for n in names], [scores[n][2] - scores[n][0] for n in names]]
    ax.bar(names, means, yerr=errors, capsize=6, color="#3b7dd8")
    ax.set_ylim(0, 10)
    ax.set_ylabel("mean rating (1-10)")
    ax.set_title(title)
    return ax


def plot_length_vs_score(points: dict[str, tuple[list[float], list[float]]], ax=None, title: str = "answer length vs judge score"):
    """Scatter of (answer length, rating) per model."""
    ax = ax or figure()[1]
    for name, (lengths, ratings) in points.items():
        ax.scatter(lengths, ratings, s=12, alpha=0.5, label=name)
    ax.set_xlabel("answer length (tokens)")
    ax.set_ylabel("rating")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


MODEL_LABELS = {"base": "base", "dpo_only": "dDPO only\n(no dSFT)", "idk": '"I don\'t\nknow."', "sft": "dSFT-1",
                "sft2": "dSFT-2", "dpo": "dSFT +\ndDPO"}


def plot_study(runs: list[dict]):
    """The seed study in three panels, one row each: every run's judge score per model (Table 3); dDPO
    minus dSFT per run with its 95% CI; and the held-out score and train reward accuracy per dDPO epoch."""
    import matplotlib.pyplot as plt

    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(7.5, 10.5))
    names = [m for m in MODEL_LABELS if m in runs[0]["models"]]
    for i, name in enumerate(names):
        ys = [r["models"][name]["score"] for r in runs]
        top.scatter([i + 0.25 * (k / max(1, len(ys) - 1) - 0.5) for k in range(len(ys))], ys, s=18, alpha=0.8)
    top.set_xticks(range(len(names)), [MODEL_LABELS[n] for n in names])
    top.set_ylabel("judge score (1-10)")
    top.set_title(f"every model, every run ({len(runs)} runs: one dot each)")
    labels = [f"w{r['world_seed']} s{r['seed']}" for r in runs]
    d = [r["dpo_vs_sft"] for r in runs]
    middle.errorbar(range(len(runs)), [x["difference"] for x in d], fmt="o", capsize=3,
                    yerr=[[x["difference"] - x["ci95"][0] for x in d], [x["ci95"][1] - x["difference"] for x in d]])
    middle.axhline(0, color="grey", lw=1)
    middle.set_xticks(range(len(runs)), labels, rotation=45)
    middle.set_ylabel("dDPO - dSFT (judge points)")
    middle.set_title("dDPO minus dSFT per run (world seed, training seed), 95% paired-bootstrap CI")
    accuracy = bottom.twinx()
    for r in runs:
        epochs = [e["epoch"] for e in r["epochs"]]
        bottom.plot(epochs, [e["score"] for e in r["epochs"]], "o-", color="#3b7dd8", alpha=0.5)
        accuracy.plot(epochs, [e["train_reward_accuracy"] for e in r["epochs"]], "s--", color="#e07b39", alpha=0.5)
    bottom.set_xlabel("dDPO epochs")
    bottom.set_ylabel("held-out judge score", color="#3b7dd8")
    accuracy.set_ylabel("train reward accuracy", color="#e07b39")
    accuracy.set_ylim(0, 1.05)
    bottom.set_title("per epoch of dDPO: judge score (circles) and train reward accuracy (squares)")
    fig.tight_layout()
    return fig


def plot_mt_bench_radar(scores_by_model: dict[str, dict[str, float]], ax=None, title: str = "MT-Bench per category"):
    """The paper's Figure 1: one closed polygon per model over MT-Bench's categories (mean rating 1-10).

    `scores_by_model[model][category]`, e.g. `benchmarks` results' ["mt_bench"]["categories"]. The
    categories are those of the first model, in its order; a category another model lacks raises."""
    import math

    import matplotlib.pyplot as plt

    if not scores_by_model:
        raise ValueError("plot_mt_bench_radar: no models to plot")
    categories = list(next(iter(scores_by_model.values())))
    for name, scores in scores_by_model.items():
        missing = [c for c in categories if c not in scores]
        if missing:
            raise ValueError(f"plot_mt_bench_radar: model {name!r} has no score for {', '.join(missing)}")
    ax = ax or plt.subplots(figsize=(5.5, 5.5), subplot_kw={"projection": "polar"})[1]
    if ax.name != "polar":
        raise ValueError("plot_mt_bench_radar needs polar axes: plt.subplots(subplot_kw={'projection': 'polar'})")
    angles = [2 * math.pi * i / len(categories) for i in range(len(categories))]
    for name, scores in scores_by_model.items():
        values = [scores[c] for c in categories]
        ax.plot(angles + angles[:1], values + values[:1], label=name)
        ax.fill(angles + angles[:1], values + values[:1], alpha=0.1)
    ax.set_xticks(angles, [c.capitalize() for c in categories])
    ax.set_ylim(0, 10)
    ax.set_title(title)
    ax.legend(loc="upper right", bbox_to_anchor=(1.3, 1.1), fontsize=8)
    return ax


def plot_epochs(epochs: list[dict], ax=None, title: str = "dDPO, epoch by epoch"):
    """The paper's Figure 3 for one run: held-out judge score (with its 95% CI) and the mean train reward
    accuracy at the end of each dDPO epoch (records of `ablations.run_table3`'s "epochs")."""
    ax = ax or figure()[1]
    x = [e["epoch"] for e in epochs]
    ax.errorbar(x, [e["score"] for e in epochs], fmt="o-", capsize=3, color="#3b7dd8", label="held-out judge score",
                yerr=[[e["score"] - e["ci95"][0] for e in epochs], [e["ci95"][1] - e["score"] for e in epochs]])
    ax.set_xticks(x)
    ax.set_xlabel("dDPO epochs")
    ax.set_ylabel("judge score (1-10)", color="#3b7dd8")
    accuracy = ax.twinx()
    accuracy.plot(x, [e["train_reward_accuracy"] for e in epochs], "s--", color="#e07b39", label="train reward accuracy")
    accuracy.set_ylim(0, 1.05)
    accuracy.set_ylabel("train reward accuracy", color="#e07b39")
    ax.set_title(title)
    return ax


PIPELINE = (
    # (stage, what it is, what it reads, what it writes); "paper:" what Zephyr used, "tiny:" the book's stand-in
    ("dSFT", "distilled supervised\nfine-tuning",
     "a base model\n+ teacher dialogues\n(paper: UltraChat;\ntiny: the toy teacher)",
     "dSFT model"),
    ("AIF", "AI feedback",
     "prompts, a pool of\nmodels, a judge\n(paper: GPT-4;\ntiny: the toy judge)",
     "preference pairs\n(chosen, rejected)"),
    ("dDPO", "distilled DPO",
     "the dSFT model\n(policy and frozen\nreference)\n+ the pairs",
     "dDPO model"),
    ("evaluation", "judged benchmarks",
     "the models, held-out\nprompts, a judge\n(paper: GPT-4;\ntiny: the toy judge)",
     "scores and\nwin rates"),
)


def plot_pipeline():
    """The recipe as a figure (after the paper's Figure 2): the four stages in order, each with what it
    reads (above) and what it writes (below). Sized to stay legible on a page about 800 px wide."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    colors = ("#3b7dd8", "#e07b39", "#4caf50", "#8e6bbf")
    fig, ax = plt.subplots(figsize=(8.5, 5.4))
    ax.set_xlim(0, 4)
    ax.set_ylim(0, 3.45)
    ax.axis("off")
    width = 0.84
    rows = {"reads": (2.1, 1.0), "stage": (1.1, 0.62), "writes": (0.05, 0.62)}  # (bottom, height) of each row

    def box(x, row, edge, face):
        bottom, height = rows[row]
        ax.add_patch(FancyBboxPatch((x - width / 2, bottom), width, height, boxstyle="round,pad=0.02,rounding_size=0.06",
                                    facecolor=face, edgecolor=edge, linewidth=1.6))
        return bottom, height

    def arrow(start, end, color):
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=16, color=color, linewidth=1.6))

    for i, ((stage, subtitle, reads, writes), color) in enumerate(zip(PIPELINE, colors)):
        x = i + 0.5
        bottom, height = box(x, "reads", "#999999", "#f4f4f4")
        ax.text(x, bottom + height - 0.04, "reads", ha="center", va="top", fontsize=10, color="#666666", style="italic")
        ax.text(x, bottom + height / 2 - 0.08, reads, ha="center", va="center", fontsize=10.5, linespacing=1.2)
        bottom, height = box(x, "stage", color, color)
        ax.text(x, bottom + height * 0.68, stage, ha="center", va="center", fontsize=16, fontweight="bold", color="white")
        ax.text(x, bottom + height * 0.28, subtitle, ha="center", va="center", fontsize=10, color="white", linespacing=1.05)
        bottom, height = box(x, "writes", color, "white")
        ax.text(x, bottom + height - 0.04, "writes", ha="center", va="top", fontsize=10, color="#666666", style="italic")
        ax.text(x, bottom + height / 2 - 0.08, writes, ha="center", va="center", fontsize=11.5, fontweight="bold",
                color=color, linespacing=1.15)
        arrow((x, rows["reads"][0] - 0.01), (x, rows["stage"][0] + rows["stage"][1] + 0.03), "#555555")
        arrow((x, rows["stage"][0] - 0.01), (x, rows["writes"][0] + rows["writes"][1] + 0.03), color)
        if i < len(PIPELINE) - 1:  # the stages run in this order
            y = rows["stage"][0] + rows["stage"][1] / 2
            arrow((x + width / 2 + 0.03, y), (x + 1 - width / 2 - 0.03, y), "#333333")
    ax.text(2, 3.42, "The Zephyr recipe: what each stage reads and writes", ha="center", va="top", fontsize=13)
    fig.tight_layout()
    return fig
