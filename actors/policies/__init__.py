"""Pure policy objects of the send pipeline: no Ray, no Redis, no I/O, no clock.

Every time-dependent method takes `now` (epoch seconds, UTC); the actor shells own the clock and
the persistence. Semantics are documented in docs/policies.md.

- `quota`: `TokenBucket`, `WindowQuota`, `ServerQuota`, `window_key`, `window_ttl`
- `recipient_throttle`: `RecipientThrottle` (per recipient-domain limits)
- `routing`: `choose_servers` and the rule / server / decision Structs
- `retry`: `RetryPolicy` (backoff with jitter, give-up → fail over)
- `circuit`: `CircuitBreaker` (server health from send outcomes)
- `suppression`: `SuppressionSet`, `shard_for`
- `addresses`: `parse_address`, `parse_address_list`, `AddressError`
- `domains`: `normalise_domain`, `normalise_email` and domain pattern matching
"""
