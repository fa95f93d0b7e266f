"""Was an open-pixel fetch made by a machine rather than by a person reading the message?

Opens are still recorded either way; reports count "machine opens" apart so open rates stay honest.
The rules, in order:
1. No User-Agent at all: mail clients always send one; scripts and scanners often do not.
2. Apple Mail Privacy Protection: Apple's proxies fetch every image of every message on delivery,
   whether or not it is read, from Apple's 17.0.0.0/8 network and with the bare User-Agent
   `Mozilla/5.0` (no platform, no engine).
3. Mailbox-provider image proxies: Gmail (`GoogleImageProxy`, via ggpht.com), Yahoo/AOL
   (`YahooMailProxy`), and similar fetchers cache images on their own servers; the fetch may come
   on delivery or on first open, and never from the reader's own address.
4. Security scanners and link/preview bots (Barracuda, Mimecast, Proofpoint, Microsoft's Safe
   Links preview, Slack/Discord/Facebook previews, generic bots, headless browsers and HTTP
   libraries) fetch URLs to inspect them.
"""

from __future__ import annotations

import ipaddress

_APPLE_NETWORK = ipaddress.ip_network("17.0.0.0/8")
_APPLE_PROXY_AGENT = "mozilla/5.0"

# Lower-case substrings of User-Agents that belong to proxies, scanners, bots and libraries.
_MACHINE_AGENT_MARKERS = (
    "googleimageproxy",
    "ggpht.com",
    "yahoomailproxy",
    "barracuda",
    "mimecast",
    "proofpoint",
    "symantec",
    "messagelabs",
    "trendmicro",
    "ms-office-preview",
    "microsoft preview",
    "safelinks",
    "slackbot",
    "discordbot",
    "facebookexternalhit",
    "twitterbot",
    "linkedinbot",
    "bot/",
    "crawler",
    "spider",
    "headlesschrome",
    "phantomjs",
    "python-requests",
    "python-urllib",
    "aiohttp",
    "curl/",
    "wget/",
    "go-http-client",
    "okhttp",
    "java/",
)


def is_machine_open(user_agent: str | None, ip: str | None) -> bool:
    agent = (user_agent or "").strip().lower()
    if not agent:
        return True
    if agent == _APPLE_PROXY_AGENT or _in_apple_network(ip):
        return True
    return any(marker in agent for marker in _MACHINE_AGENT_MARKERS)


def _in_apple_network(ip: str | None) -> bool:
    if not ip:
        return False
    try:
        address = ipaddress.ip_address(ip.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address in _APPLE_NETWORK
