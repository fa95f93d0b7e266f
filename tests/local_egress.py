"""The operator's opt-in the tests make: simulators, aiosmtpd and moto all listen on 127.0.0.1."""

from providers.egress import Egress

LOCAL = Egress(allow_private_targets=True)
