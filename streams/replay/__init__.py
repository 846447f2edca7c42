"""Replay and what-if: read the recorded topics (run) and fold them again with the pure core (compare)."""
