"""Fixtures shared by the simulations."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture
def quiet_logs() -> Iterator[None]:
    """The node's and otp's loggers at CRITICAL for this test only (a long simulation logs
    thousands of lines), put back afterwards: tests that run later read otp's error logs."""
    loggers = [logging.getLogger(name) for name in ("alys", "otp")]
    saved = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, saved, strict=True):
            logger.setLevel(level)
