"""The worker's HTTP API: authz, introspection, operator actions, ingest, drills."""
