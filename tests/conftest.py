import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def runs_outside_the_checkout(tmp_path_factory):
    """Runs a test writes without its own ZEPHYR_RUNS (a finished run records itself in
    runs/<scale>/latest.json) go to a temporary directory, never to the checkout's runs/."""
    if not os.environ.get("ZEPHYR_RUNS"):
        os.environ["ZEPHYR_RUNS"] = str(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="session")
def world():
    from zephyr_utils.toy.world import ToyWorld

    return ToyWorld(seed=0)


@pytest.fixture(scope="session")
def tiny_base_path():
    """The tiny base model of the shipped recipe (built once, then reused from the cache)."""
    from zephyr_utils.toy.base_model import build_tiny_base

    return build_tiny_base(progress=False)


@pytest.fixture(scope="session")
def tiny_base(tiny_base_path):
    from zephyr_utils.generation import load_model

    return load_model(str(tiny_base_path))


@pytest.fixture(scope="session")
def built_book(tmp_path_factory, tiny_base_path):
    """The book built as `make book` builds it (every chapter executed at tiny scale, -W -n, no progress
    bars), into a temporary directory with its own runs/. Returns the `_build` directory.

    ZEPHYR_BUILT_BOOK=<dir>/_build reuses a build made the same way instead (jupyter-book build book
    --path-output <dir> with ZEPHYR_RUNS=<dir>/runs ZEPHYR_PROGRESS=0), to run the tests again without
    building; by default (`make test`) the book is built fresh."""
    import subprocess
    import sys
    from pathlib import Path

    if os.environ.get("ZEPHYR_BUILT_BOOK"):
        return Path(os.environ["ZEPHYR_BUILT_BOOK"])
    root = Path(__file__).resolve().parents[1]
    assert (root / "book/_vendor/node_modules/mathjax/es5/tex-chtml.js").is_file(), "MathJax is missing: run `make setup`"
    out = tmp_path_factory.mktemp("book")
    env = {**os.environ, "ZEPHYR_RUNS": str(out / "runs"), "ZEPHYR_SCALE": "tiny", "ZEPHYR_PROGRESS": "0"}
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    done = subprocess.run([str(jupyter_book), "build", str(root / "book"), "--path-output", str(out), "-W", "-n", "--keep-going"],
                          env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return out / "_build"
