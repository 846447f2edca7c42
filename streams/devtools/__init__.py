"""Development harness: a local Kafka broker from the official jars, child processes that die with their
parent, worker processes, and the zero-setup demo.
"""
