#!/bin/bash
# Create tripwire's topics on the compose Kafka (idempotent: --if-not-exists).
# Run by the `kafka-init` service of deploy/compose/compose.yaml with the apache/kafka image.
# Same layout as streams/kafka/topics.py: every topic gets PARTITIONS partitions; breaker-state is
# compacted (latest state per scope). PARTITIONS caps the number of busy workers: scale out by
# raising it (see docs/deploy.md, "Scale").
set -euo pipefail

BOOTSTRAP="${BOOTSTRAP:-kafka:9092}"
PARTITIONS="${PARTITIONS:-8}"
REPLICATION="${REPLICATION:-1}"
KT=/opt/kafka/bin/kafka-topics.sh

create() {
  local topic="$1"; shift
  "$KT" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
        --topic "$topic" --partitions "$PARTITIONS" --replication-factor "$REPLICATION" "$@"
}

create agent-traces
create agent-traces-dlq
create otlp_spans
create breaker-state --config cleanup.policy=compact
# the audit log: keep it longer than the 7-day broker default
create breaker-events --config retention.ms=7776000000
# internal: cross-agent scope counts per trace partition, shared between the workers
create scope-partials --config cleanup.policy=compact

"$KT" --bootstrap-server "$BOOTSTRAP" --describe \
      --topic 'agent-traces|agent-traces-dlq|otlp_spans|breaker-state|breaker-events|scope-partials'
