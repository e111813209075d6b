"""The imperative shell: read facts from the control plane, call the core, record, act."""
