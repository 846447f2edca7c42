"""The read API: incidents, silences and dead letters as versioned JSON (``/api/v1``)."""
