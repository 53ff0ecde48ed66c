"""The per-region controller: `process` wires the adapters and schedules the work;
`gate` (pure) says whether to act now, `records` (pure) merges what the fleet
and the databases say, `status` (pure) is the status view, `operator` runs the
operator's verbs, `steps` turns engine actions into executable steps, which the
`executor` runs under the `journal`."""
