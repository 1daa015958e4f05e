"""Method- and model-independent machinery: hooks, per-run step state, schedules, validation."""
