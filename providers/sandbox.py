"""The sandbox provider: accepts every message and sends nothing (the embedded default's server).

Useful to try the API end to end without credentials: every message ends as `message.sent` with
provider message id `sandbox-<our message id>`, and no event ever follows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import aiohttp

from providers.base import Outcome, Sent
from schemas.messages import OutboundMessage
from schemas.provider_configs import SandboxConfig as Config


class Adapter:
    name: ClassVar[str] = "sandbox"
    max_batch: ClassVar[int] = 1000

    def __init__(
        self,
        config: Config | None = None,
        *,
        http: aiohttp.ClientSession | None = None,
        egress: object = None,
    ) -> None:
        self.config = config or Config()
        self.accepted = 0

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[Outcome]:
        self.accepted += len(messages)
        return [Sent(provider_message_id=f"sandbox-{message.id}") for message in messages]

    async def close(self) -> None:
        return None
