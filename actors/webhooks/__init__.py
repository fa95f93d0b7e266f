"""The webhook deliverer's plain-asyncio parts: fan-out, delivery queues, sending, and the policies.

`WebhookDeliveryLoop` (loop.py) composes them; `actors/webhook_deliverer.py` is the thin Ray shell.
"""
