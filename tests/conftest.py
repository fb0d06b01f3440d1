import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def world():
    from zephyr_utils.toyworld import ToyWorld

    return ToyWorld(seed=0)


@pytest.fixture(scope="session")
def tiny_base_path():
    """The tiny base model of the shipped recipe (built once, then reused from the cache)."""
    from zephyr_utils.tiny import build_tiny_base

    return build_tiny_base(progress=False)


@pytest.fixture(scope="session")
def tiny_base(tiny_base_path):
    from zephyr_utils.generation import load_model

    return load_model(str(tiny_base_path))
