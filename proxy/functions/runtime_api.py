"""The ``runtime-api`` runtime (placeholder until implemented)."""
class RuntimeApiRuntime:
    def __init__(self, spec, log, concurrency):
        raise NotImplementedError("runtime-api")
