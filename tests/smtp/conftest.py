"""Fixtures for the SMTP adapter tests: a plain aiosmtpd sink and a TLS context for the secure ones."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import pytest

from .sink import SmtpSink, self_signed_tls


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    return self_signed_tls(tmp_path_factory.mktemp("tls"))
