"""Channels: one module per channel opsloop delivers to (pure formatters)."""
