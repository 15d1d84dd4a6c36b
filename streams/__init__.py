"""tripwire streams: the Kafka / faust / HTTP wiring around detectors and breakers."""

__version__ = "0.1.0"
