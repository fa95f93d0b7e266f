"""The analytics store's own errors; every backend translates its driver's exceptions into these.

AnalyticsError
├── InvalidQuery        a request the caller must fix: 422 validation_error, `pointer` names the field
│   └── InvalidCursor   a cursor this API did not issue, or one issued for other filters: 400 invalid_cursor
└── StoreUnavailable    the database failed or cannot be reached: 503 unavailable
"""

from __future__ import annotations


class AnalyticsError(Exception):
    """Base of every error the analytics store raises."""


class InvalidQuery(AnalyticsError):
    """A query parameter is invalid. `pointer` is a JSON pointer such as `#/from`."""

    code = "invalid"

    def __init__(self, pointer: str, detail: str, code: str | None = None) -> None:
        super().__init__(f"{pointer}: {detail}")
        self.pointer = pointer
        self.detail = detail
        if code is not None:
            self.code = code


class InvalidCursor(InvalidQuery):
    code = "invalid_cursor"

    def __init__(self, detail: str) -> None:
        super().__init__("#/cursor", detail)


class StoreUnavailable(AnalyticsError):
    """The backend raised; the original exception is chained as `__cause__`."""
