"""Email over SMTP: multipart/alternative (plain text first, then HTML), threaded per incident.

The Message-ID is derived from the effect id, so a resend of the same effect is
recognisably the same message. Every message of one incident carries
In-Reply-To / References to one thread root derived from the thread key, so mail
clients (which thread on References, JWZ-style) group trigger, acknowledge and
resolve together even though the root is never sent by itself.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate, getaddresses
from typing import Any

from agents.sinks.base import Channel, PermanentError, SmtpRequest, notify_of
from streams.model.receivers import ChannelSpec, RateLimit, Receiver, SettingError

DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
SUBJECT_MAX = 250
ACTION_WORD = {"trigger": "Triggered", "acknowledge": "Acknowledged", "resolve": "Resolved"}
# CR, LF and the other line breaks / control characters a header value must not carry.
_HEADER_BREAKS = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")


def header_safe(value: str) -> str:
    """``value`` on one line: every run of CR/LF/control characters folded into one space.

    Alert and scan text reaches the Subject (and the X-Opsloop-* headers) verbatim;
    ``email.message`` refuses a linefeed in a header ("Header values may not contain
    linefeed"), which used to dead-letter the whole notification. Folding keeps the
    text readable and makes header injection impossible.
    """
    return _HEADER_BREAKS.sub(" ", str(value)).strip()


def _domain(from_addr: str) -> str:
    addresses = getaddresses([from_addr])
    address = addresses[0][1] if addresses else ""
    return address.rpartition("@")[2] or "opsloop.local"


def message_id(effect_id: str, domain: str) -> str:
    return f"<{effect_id}.opsloop@{domain}>"


def thread_id(thread_key: str, domain: str) -> str:
    digest = hashlib.sha256(thread_key.encode()).hexdigest()[:32]
    return f"<thread-{digest}.opsloop@{domain}>"


def _plain(effect: Mapping[str, Any], n: Mapping[str, Any], action: str) -> str:
    lines = [
        f"[{n['severity'].upper()}] {n['title']}",
        f"{ACTION_WORD.get(action, action)} · session {effect['session_key']}",
        "",
    ]
    if n.get("body"):
        lines += [n["body"], ""]
    for key, value in (n.get("fields") or {}).items():
        lines.append(f"{key}: {value}")
    if effect.get("runbook") and "runbook" not in (n.get("fields") or {}):  # effects written before 3 had it in fields
        lines.append(f"runbook: {effect['runbook']}")
    if n.get("links"):
        lines.append("")
        lines += [f"{link['label']}: {link['url']}" for link in n["links"]]
    return "\n".join(lines).rstrip() + "\n"


def _html(effect: Mapping[str, Any], n: Mapping[str, Any], action: str) -> str:
    e = html.escape
    facts = dict(n.get("fields") or {})
    if effect.get("runbook"):
        facts.setdefault("runbook", effect["runbook"])
    rows = "".join(f'<tr><th align="left">{e(k)}</th><td>{e(v)}</td></tr>' for k, v in facts.items())
    links = " · ".join(
        f'<a href="{e(link["url"], quote=True)}">{e(link["label"])}</a>' for link in n.get("links") or []
    )
    body = "".join(f"<p>{e(p)}</p>" for p in (n.get("body") or "").split("\n\n") if p.strip())
    return (
        "<!doctype html><html><body>"
        f"<h2>[{e(n['severity'].upper())}] {e(n['title'])}</h2>"
        f"<p><em>{e(ACTION_WORD.get(action, action))} · session {e(effect['session_key'])}</em></p>"
        f"{body}" + (f"<table>{rows}</table>" if rows else "") + (f"<p>{links}</p>" if links else "") + "</body></html>"
    )


def build_message(effect: Mapping[str, Any], receiver: Receiver) -> EmailMessage:
    """The MIME message for a notify effect (pure)."""
    n = notify_of(effect)
    action = n.get("action") or "trigger"
    sender = receiver.setting("from")
    to = receiver.setting("to")
    to = [to] if isinstance(to, str) else list(to)
    domain = _domain(sender)
    msg = EmailMessage()
    subject = f"[{header_safe(n['severity']).upper()}] {header_safe(n['title'])}"
    msg["Subject"] = subject if len(subject) <= SUBJECT_MAX else subject[: SUBJECT_MAX - 1] + "…"
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Date"] = formatdate(effect["created_at"] / 1000, usegmt=True)
    msg["Message-ID"] = message_id(header_safe(effect["effect_id"]), domain)
    root = thread_id(n.get("thread_key") or effect["session_key"], domain)
    msg["In-Reply-To"] = root
    msg["References"] = root
    msg["X-Opsloop-Effect-Id"] = header_safe(effect["effect_id"])
    msg["X-Opsloop-Action"] = header_safe(action)
    msg["X-Opsloop-Severity"] = header_safe(n["severity"])
    msg.set_content(_plain(effect, n, action))
    msg.add_alternative(_html(effect, n, action), subtype="html")
    return msg


def render(effect: Mapping[str, Any], receiver: Receiver, secrets: Mapping[str, str]) -> SmtpRequest:
    security = receiver.setting("security", "starttls")
    if security not in DEFAULT_PORTS:
        raise PermanentError(f"receiver {receiver.name}: unknown SMTP security {security!r}")
    username = secrets.get("username") or receiver.setting("username")
    return SmtpRequest(
        message=build_message(effect, receiver),
        host=receiver.setting("host"),
        port=int(receiver.setting("port", DEFAULT_PORTS[security])),
        security=security,
        username=username,
        password=secrets.get("password"),
        timeout_s=float(receiver.setting("timeout_s", 10.0)),
        ca_file=receiver.setting("ca_file"),
    )


SECURITY = tuple(DEFAULT_PORTS)  # starttls, tls, none


def check_settings(settings: Mapping[str, Any], secrets: Mapping[str, Any]) -> None:
    """A receiver's values, checked at load (a bad one would only fail on the first page)."""
    if "port" in settings and (
        isinstance(settings["port"], bool) or not isinstance(settings["port"], int) or not 0 < settings["port"] < 65536
    ):
        raise SettingError("port", f"must be a TCP port number, got {settings['port']!r}")
    if settings.get("security", "starttls") not in SECURITY:
        raise SettingError("security", f"must be one of {', '.join(SECURITY)}, got {settings['security']!r}")
    to = settings["to"]
    if isinstance(to, str):
        to = [to]
    if not isinstance(to, list) or not to or not all(isinstance(a, str) and "@" in a for a in to):
        raise SettingError("to", "must be an address or a list of addresses")
    if ("username" in settings or "username" in secrets) != ("password" in secrets):
        raise SettingError(None, "SMTP auth needs both username and password (or neither)")


SPEC = ChannelSpec(
    required=("host", "from", "to"),
    secret_only=("password",),
    optional=("port", "security", "username", "password", "timeout_s", "ca_file"),
    default_rate=RateLimit(10, 1.0),
    check_settings=check_settings,
)

CHANNEL = Channel(name="email", spec=SPEC, render=render, idempotent=False)
