"""Credentials opsloop checks or signs with are at least 16 characters, refused at start naming the variable."""

from __future__ import annotations

import pytest

from streams.api.auth import ApiAuth, ApiTokenConfigError
from streams.credentials import MIN_CHARS, too_short
from streams.settings import Settings, SettingsError
from streams.ui.auth import SessionSigner, console_auth

SHORT = "hunter2-pass"  # 12 characters
LONG = "x" * MIN_CHARS


def test_too_short_says_how_long_and_never_the_value():
    why = too_short(SHORT)
    assert why is not None and "is 12 characters; use at least 16" in why and SHORT not in why
    assert too_short(LONG) is None and too_short("") is None  # empty: not set


@pytest.mark.parametrize(
    "make, variable",
    [
        (
            lambda: ApiAuth.from_environ({"OPSLOOP_API_TOKENS": f"alice={LONG},bob={SHORT}"}),
            "OPSLOOP_API_TOKENS: 'bob'",
        ),
        (lambda: console_auth({"OPSLOOP_UI_TOKENS": f"bob={SHORT}"}), "OPSLOOP_UI_TOKENS: 'bob'"),
        (lambda: SessionSigner.from_environ({"OPSLOOP_UI_SECRET": SHORT}), "OPSLOOP_UI_SECRET"),
    ],
)
def test_short_reader_tokens_and_the_consoles_key_are_refused(make, variable):
    """No endpoint counts wrong guesses, so a short token can be guessed; the console's cookie key signs
    every login."""
    with pytest.raises(ApiTokenConfigError) as err:
        make()
    assert variable in str(err.value) and "12 characters" in str(err.value) and SHORT not in str(err.value)


def test_a_short_action_link_key_is_refused(monkeypatch):
    """One Acknowledge link is enough to search a short key offline, and then to sign Approve links."""
    monkeypatch.setenv("OPSLOOP_ACK_SECRET", SHORT)
    with pytest.raises(SettingsError) as err:
        Settings.from_env()
    assert "OPSLOOP_ACK_SECRET: is 12 characters; use at least 16" in str(err.value) and SHORT not in str(err.value)
    monkeypatch.setenv("OPSLOOP_ACK_SECRET", LONG)
    assert Settings.from_env().ack.secret.get_secret_value() == LONG
