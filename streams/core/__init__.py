"""The pure core: decide() and its gates, the session state, grouping, escalation, acks, timers, the digest
fold, and the table writes a decision implies. No I/O, no clock; imports model/ and nothing from kafka/,
ingest/, audit/ or agents/.
"""
