"""The book's figures that need no run: drawn from code alone."""

import matplotlib

matplotlib.use("Agg")


def test_pipeline_figure_names_the_four_stages_in_order_with_what_each_reads_and_writes():
    import matplotlib.pyplot as plt

    from zephyr_utils.plotting import PIPELINE, plot_pipeline

    fig = plot_pipeline()
    try:
        texts = [t for ax in fig.axes for t in ax.texts] + list(fig.texts)
        stages = {t.get_text(): t.get_position()[0] for t in texts if t.get_text() in {"dSFT", "AIF", "dDPO", "evaluation"}}
        assert sorted(stages, key=stages.get) == ["dSFT", "AIF", "dDPO", "evaluation"]  # all four, left to right
        shown = {t.get_text() for t in texts}
        for _, _, reads, writes in PIPELINE:
            assert reads in shown and writes in shown
        assert fig.get_size_inches()[0] * fig.dpi <= 1000  # drawn near the page width, so its text is not shrunk much
    finally:
        plt.close(fig)
