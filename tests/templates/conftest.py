"""The SMTP sink and a sending server pointed at it, shared with the pipeline tests."""

from tests.pipeline.conftest import sink, smtp_server  # noqa: F401  (fixtures)
