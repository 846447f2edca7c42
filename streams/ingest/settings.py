"""Ingest's settings are the ``ingest`` section of the root :class:`streams.settings.Settings`."""

from streams.settings import IngestSettings

__all__ = ["IngestSettings"]
