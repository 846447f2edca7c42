"""Bearer tokens per producer, and the duplicate memory: pure, no broker."""

from __future__ import annotations

import pytest

from streams.ingest.auth import TokenAuth, TokenConfigError, parse_tokens, producer_tokens
from streams.ingest.errors import Forbidden, Unauthorized
from streams.ingest.idempotency import RecentIds


def test_tokens_from_the_list_and_per_producer_variables():
    tokens = producer_tokens(
        " prometheus = p-1-0123456789abcdef , alertmanager=a-2-0123456789abcdef,,",
        {
            "OPSLOOP_INGEST_TOKEN_SCANNER": "s-3-0123456789abcdef",
            "OPSLOOP_INGEST_TOKENS": "ignored-here",
            "OPSLOOP_INGEST_TOKEN_X_FILE": "/run/x",
            "PATH": "/bin",
        },
    )
    assert tokens == {
        "prometheus": b"p-1-0123456789abcdef",
        "alertmanager": b"a-2-0123456789abcdef",
        "scanner": b"s-3-0123456789abcdef",
    }


@pytest.mark.parametrize(
    "spec, env, reason",
    [
        ("prometheus", {}, "entry 1: expected name=token"),
        ("a=x-0123456789abcdef,=secret-value", {}, "entry 2"),
        ("a=", {}, "producer 'a' has an empty token"),
        ("a=x-0123456789abcdef,a=secret-value", {}, "listed twice"),
        ("a=secret-value-0123456789", {"OPSLOOP_INGEST_TOKEN_A": "other-secret"}, "also has a token"),
        # a short token can be guessed (nothing counts wrong guesses): refused, naming the producer only
        ("a=secret-value", {}, "producer 'a': the token is 12 characters; use at least 16"),
        ("", {"OPSLOOP_INGEST_TOKEN_B": "other-secret"}, "OPSLOOP_INGEST_TOKEN_B: the token is 12 characters"),
        ("", {"OPSLOOP_INGEST_TOKEN_B": " "}, "OPSLOOP_INGEST_TOKEN_B: empty token"),
    ],
)
def test_malformed_token_settings_never_echo_a_token(spec, env, reason):
    with pytest.raises(TokenConfigError) as err:
        producer_tokens(spec, env)
    assert reason in str(err.value)
    assert "secret-value" not in str(err.value) and "other-secret" not in str(err.value)


P, S = "tok-p-0123456789abcdef", "tok-s-0123456789abcdef"


def test_check_names_the_producer_401_without_403_wrong():
    auth = TokenAuth(parse_tokens("prometheus=tok-p,scanner=tok-s".replace("tok-p", P).replace("tok-s", S)))
    assert auth.check(f"Bearer {S}") == "scanner"
    assert auth.check(f"bearer   {P} ") == "prometheus"
    for header in (None, "", "Bearer", "Bearer  ", "Basic dXNlcjpwYXNz", P):
        with pytest.raises(Unauthorized) as err:
            auth.check(header)
        assert err.value.headers["WWW-Authenticate"].startswith("Bearer")
    for header in ("Bearer tok-x", f"Bearer {P}2", "Bearer tok-"):
        with pytest.raises(Forbidden) as err:
            auth.check(header)
        assert "tok-" not in err.value.reason  # the reason never repeats what was presented
    with pytest.raises(Forbidden):
        TokenAuth({}).check("Bearer anything")


def test_recent_ids_expire_by_age_and_evict_oldest_by_capacity():
    now = [0.0]
    recent = RecentIds(capacity=3, ttl_s=10, clock=lambda: now[0])
    for i in "abc":
        recent.add(i)
    assert all(i in recent for i in "abc")
    recent.add("d")  # capacity 3: the oldest goes
    assert "a" not in recent and "d" in recent and len(recent) == 3
    now[0] = 5.0
    recent.add("e")
    now[0] = 12.0  # b, c, d are 12 s old; e is 7 s old
    assert "b" not in recent and "e" in recent
    recent.add("f")  # adding sweeps the expired ones from the old end
    assert len(recent) == 2
