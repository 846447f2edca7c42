"""Kafka plumbing: the Avro codec, the topic catalogue and admin, producer, reader, batched sends, dead
letters, the faust app factory, the redelivery guard and every private faust / aiokafka access (compat).
"""
