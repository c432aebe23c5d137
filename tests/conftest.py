"""Shared fixtures. Servers and builders live in tests/helpers/; each test module keeps its own data."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import torch


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
