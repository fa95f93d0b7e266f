"""The DKIM signer for mail from a domain: the store finds the verified domain, providers sign.

Here, above both, because the store may not build a `providers.dkim.DkimSigner` (layers) and the
providers may not read the store. Loading an RSA key costs about a millisecond, so a signer per
sealed key is kept (bounded, least recently used dropped first).
"""

from __future__ import annotations

from collections import OrderedDict

import redis.asyncio as aioredis

from providers.dkim import DkimSigner
from schemas.domains import SendingDomainRecord
from security.secretbox import SecretBox
from store.domains import open_private_key, verified_domain_for

SIGNER_CACHE_SIZE = 256
_signers: OrderedDict[str, DkimSigner] = OrderedDict()


def signer_for(box: SecretBox, record: SendingDomainRecord) -> DkimSigner:
    cache_key = f"{record.id}|{record.selector}|{record.sealed_private_key}"
    signer = _signers.get(cache_key)
    if signer is None:
        signer = DkimSigner(record.domain, record.selector, open_private_key(box, record))
        _signers[cache_key] = signer
        while len(_signers) > SIGNER_CACHE_SIZE:
            _signers.popitem(last=False)
    else:
        _signers.move_to_end(cache_key)
    return signer


async def signing_key_for(
    redis: aioredis.Redis, box: SecretBox, workspace: str, domain: str
) -> DkimSigner | None:
    """The DKIM signer for mail from `domain` (`store.domains.verified_domain_for`), or None."""
    record = await verified_domain_for(redis, workspace, domain)
    return None if record is None else signer_for(box, record)
