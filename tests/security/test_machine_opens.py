from __future__ import annotations

import pytest

from security.link_rewrite import is_machine_open

APPLE_MAIL_READER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
THUNDERBIRD = "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.3.1"


@pytest.mark.parametrize(
    ("user_agent", "ip"),
    [
        (None, "203.0.114.9"),
        ("", "203.0.114.9"),
        ("Mozilla/5.0", "104.28.1.2"),  # Apple Mail Privacy Protection's bare agent
        (APPLE_MAIL_READER, "17.58.100.1"),  # Apple's network
        (APPLE_MAIL_READER, "::ffff:17.58.100.1"),
        (
            "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
            "66.249.1.1",
        ),
        ("YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html", "98.136.1.1"),
        ("Barracuda Sentinel (EE)", "64.235.1.1"),
        ("Mozilla/5.0 (compatible; Mimecast)", "205.139.1.1"),
        ("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", "3.3.3.3"),
        ("Mozilla/5.0 HeadlessChrome/120.0", "3.3.3.3"),
        ("python-requests/2.31.0", "3.3.3.3"),
        ("curl/8.4.0", "3.3.3.3"),
    ],
)
def test_proxies_scanners_and_bots_are_machine_opens(user_agent: str | None, ip: str) -> None:
    assert is_machine_open(user_agent, ip)


@pytest.mark.parametrize(
    ("user_agent", "ip"),
    [
        (APPLE_MAIL_READER, "81.82.83.84"),
        (THUNDERBIRD, "2a02:1810::1"),
        (THUNDERBIRD, None),
        (THUNDERBIRD, "junk"),
    ],
)
def test_mail_clients_are_people(user_agent: str, ip: str | None) -> None:
    assert not is_machine_open(user_agent, ip)
