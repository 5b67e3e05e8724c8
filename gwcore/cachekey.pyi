from typing import Iterable, Mapping, Sequence

SAFE_HEADERS: frozenset[str]

class KeySpec:
    namespace: str
    path_params: tuple[str, ...]
    query: tuple[str, ...]
    headers: tuple[str, ...]
    strict: bool
    allowed: frozenset[str]
    def __init__(self, namespace: str, path_params: Iterable[str] = ...,
                 query: Iterable[str] = ..., headers: Iterable[str] = ...,
                 strict: bool = ..., allowed_headers: Iterable[str] | None = ...) -> None: ...
    def key(self, method: str, host: str | None, path: str, query: str | None,
            headers: Sequence[tuple[str, str]], path_params: Mapping[str, str] | None,
            identity: str | None = ..., body: bytes | None = ...) -> bytes | None: ...

def with_vary(canonical: bytes, names: Sequence[str],
              headers: Sequence[tuple[str, str]]) -> bytes: ...
def digest(canonical: bytes) -> bytes: ...
def canonical_identity(api_key: str | None, principal: object) -> str | None: ...
