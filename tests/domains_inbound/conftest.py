"""Each test its own workspace, so nothing one test leaves in session-long actors meets another."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture
def ws() -> str:
    return f"acme-{uuid.uuid4().hex[:10]}"
