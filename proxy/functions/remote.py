"""The ``remote`` runtime (placeholder until implemented)."""
class RemoteRuntime:
    def __init__(self, spec, log, concurrency):
        raise NotImplementedError("remote")
