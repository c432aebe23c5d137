"""Shared fixtures. Servers and builders live in tests/helpers/; each test module keeps its own data."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def _quiet_third_party_logs() -> None:
    logging.getLogger("urllib3").setLevel(logging.WARNING)
