"""Shared fixtures. Servers and builders live in tests/helpers/; each test module keeps its own data."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import torch

# The modules that take a minute or more (real DVC pipelines, multiruns of real processes), run first: with
# `make test`'s two workers (`--dist loadfile`, a module per worker) a long module last would leave the other
# worker idle while it runs.
FIRST = (
    "test_pipeline_dvc.py",
    "test_transfer.py",
    "test_synth.py",
    "test_scaling_study.py",
    "test_multirun.py",
    "test_dvc_experiments.py",
    "test_cluster.py",
    "test_adding_a_family.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long modules first (`FIRST`, in its order), the rest as collected."""
    order = {name: rank for rank, name in enumerate(FIRST)}
    items.sort(key=lambda item: order.get(item.path.name, len(FIRST)))  # stable: a module's tests keep their order


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and do not fight other work for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _quiet_third_party_logs() -> None:
    logging.getLogger("urllib3").setLevel(logging.WARNING)
