"""Provider name -> adapter module. Modules are imported on first use so an unused SDK costs nothing."""

from __future__ import annotations

import importlib
from types import ModuleType

MODULES: dict[str, str] = {
    "sandbox": "providers.sandbox",
    "smtp": "providers.smtp",
    "amazon-ses": "providers.ses",
    "mailgun": "providers.mailgun",
    "sendgrid": "providers.sendgrid",
    "resend": "providers.resend",
    "postmark": "providers.postmark",
}


class UnknownProvider(KeyError):
    pass


def provider_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(MODULES[name])
    except KeyError:
        raise UnknownProvider(name) from None
