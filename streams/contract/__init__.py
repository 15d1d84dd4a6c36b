"""The wire contract: bytes to validated trace events (schema, decode, dead letters, signing, OTLP). Knows no faust."""
