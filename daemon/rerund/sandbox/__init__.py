"""A Flyte-compatible control plane (Connect protocol over HTTP) for the demo, for users'
policy testing and for rerund's own tests. The real flyte SDK and CLI talk to it exactly as
to a real backend."""
