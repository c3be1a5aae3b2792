"""Shared fixtures: the built-in trained teacher and real Fashion-MNIST images (loaded once per session)."""

from __future__ import annotations

import os
import tempfile
import warnings

import pytest
import torch

from practise_plugin.models import builtin
from practise_plugin.models.loading import load_model

# pytest-xdist runs one worker per core (pyproject's addopts): each gets its share of the cores as torch
# threads, so two workers never oversubscribe the machine (a second OpenMP thread on a busy core is up to 10x
# slower for small ops, measured); in-process (`-n0`) the session keeps two threads as before.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _WORKERS)))
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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules holding a ``slow`` test run first, each kept whole (its module fixtures are set up once).

    The work-stealing scheduler hands each worker a contiguous half and lets an idle worker take from the end
    of the other's queue: with the minute-long runs at the front, what is left at the end are short tests that
    balance the two workers, instead of the three-minute demo starting last on one of them.
    """
    slow_modules = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module.__name__ not in slow_modules)  # stable: order kept within each group
