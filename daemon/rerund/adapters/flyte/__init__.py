"""The flyte SDK adapter: the ``ControlPlane`` and ``Deployments`` ports on the real flyte SDK.
The only package of rerund that imports flyte (with the sandbox). One job per module:

- ``control_plane``: ``FlyteControlPlane``, the calls (connect, reads, listings, watch, creates).
- ``connection``: ``Connection`` (endpoint, credentials, CA, proxy) and the API key's parts.
- ``backend``: Union or open-source Flyte, found or configured; what ListRuns takes.
- ``oss``: open-source Flyte's create, once: look first, create with a mark, read it back.
- ``convert``: flyteidl2 messages to rerund's values and back (pure).
- ``errors``: ``translate_error``, the SDK's and connectrpc's errors as ``rerund.errors``.
- ``sdk_loop``: the SDK's event loop (``run_on_sdk_loop``) and the raw RPCs on it.
- ``tuning``: rerund's interceptors on the SDK's client (read reuse, the rate gate).
- ``sdk_internals``: the fence, every touch of the SDK's private modules, version-checked.

Import from the modules (``rerund.adapters.flyte.control_plane``): this file imports nothing,
so the sandbox can use ``sdk_internals`` without loading the adapter.
"""
