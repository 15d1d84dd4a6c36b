"""Kafka plumbing: client security, pre-flight probe, producers, topic layout, the embedded broker."""
