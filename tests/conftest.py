"""Shared fixtures: the built-in trained teacher and real Fashion-MNIST images (loaded once per session)."""

from __future__ import annotations

import os
import tempfile
import warnings

import pytest
import torch

from practise_plugin.models import builtin
from practise_plugin.models.loading import load_model

torch.set_num_threads(2)
# Latency measurements are cached per machine (~/.cache/practise-plugin by default); a test session keeps
# its own, so no test reads a measurement an earlier session or another program made.
os.environ["PRACTISE_CACHE_DIR"] = tempfile.mkdtemp(prefix="practise-test-cache-")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (opt in with ``pytestmark``): tracing, NNCF statistics and small training
    steps only contend on a shared 2-core machine, up to 10x slower with a second OpenMP thread (measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def teacher():
    return load_model("builtin")


@pytest.fixture(scope="session")
def tiny():
    """200 real Fashion-MNIST training images, 20 per class."""
    return builtin.tiny_set(200, seed=0)


def random_model(spec: str):
    """A randomly initialised timm/torchvision model (structure tests need no weights)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        return load_model(spec)
