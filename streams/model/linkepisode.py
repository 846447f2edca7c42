"""The ``episode`` field of a signed action link: the incident the link's message told of.

Read in two places: ingest checks a followed link (:func:`streams.core.acklinks.verify_action_query`), and
the Slack sink turns a message's links into buttons naming the same incident. One reading for both.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit


def parse_episode(named: str | None) -> int | None:
    """None for a link made before episodes were signed; ValueError if it is not a number."""
    if named is None:
        return None
    if not (named.isascii() and named.isdigit() and len(named) <= 18):
        raise ValueError("episode is not a number")
    return int(named)


def link_episode(url: str) -> int | None:
    """The episode a link's URL names (None: none, or one that is not a number); the link is not verified."""
    try:
        return parse_episode(next(iter(parse_qs(urlsplit(url).query).get("episode") or []), None))
    except ValueError:
        return None
