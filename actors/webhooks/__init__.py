"""WebhookDeliverer: fan-out, delivery queues, sending and the policies, as plain asyncio parts.

`body.WebhookDeliveryLoop` composes them; `actor.py` is the thin Ray shell; `client.py` starts it.
"""
