"""The faust worker: app factory, offset acks, state readers, alerting and metric families."""
