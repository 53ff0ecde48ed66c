"""Health checks: probes of each kind, the threshold state machine, the probe scheduler."""
