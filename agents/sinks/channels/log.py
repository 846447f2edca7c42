"""The ``log`` channel: a notification written to the worker's log, nothing sent.

The demo and the default routes use it, so the whole loop (receipts) runs without
any external service configured. A repeated log line after a redelivery is
harmless, so this sink skips the ledger: it sees every effect of the default route.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agents.sinks.base import Channel, LogRequest, notify_of
from streams.model.receivers import ChannelSpec, Receiver


def render(effect: Mapping[str, Any], receiver: Receiver, secrets: Mapping[str, str]) -> LogRequest:
    n = notify_of(effect)
    fields = " ".join(f"{k}={v}" for k, v in (n.get("fields") or {}).items())
    line = (
        f"[{n['severity'].upper()}] {n['title']} ({n.get('action') or 'trigger'}) "
        f"session={effect['session_key']} effect={effect['effect_id']} {fields}"
    ).rstrip()
    return LogRequest(line=line)


CHANNEL = Channel(name="log", spec=ChannelSpec(), render=render, idempotent=True, ledger=False)
