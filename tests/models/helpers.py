"""Helpers shared by the model-resolution tests."""

from __future__ import annotations

import pytest

from tokenyard.errors import ModelLoadError


def one_line_error(raised: pytest.ExceptionInfo[ModelLoadError]) -> str:
    message = str(raised.value)
    assert "\n" not in message
    return message
