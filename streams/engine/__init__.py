"""The domain engine: events in, detector state and breaker decisions out. No faust, no Kafka, no HTTP."""
