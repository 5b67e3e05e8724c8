"""Request ids (pure-Python twin of gwcore.reqid): random version-4 UUID strings.

From a seeded Mersenne Twister instead of a getrandom() call per id (4x cheaper than
str(uuid.uuid4())), reseeded from os.urandom in every forked child. Not a cryptographic
generator: ids label requests, they are not secrets.
"""
from __future__ import annotations

import os
import random

__all__ = ["new_request_id", "seed"]

_rng = random.Random(os.urandom(32))
_bits = _rng.getrandbits
#: the version (4) and variant (RFC 4122) bits of a UUID4, as uuid.UUID(version=4) sets them
_V4_KEEP = ~((0xF000 << 64) | (0xC000 << 48))
_V4_SET = (0x4000 << 64) | (0x8000 << 48)


def seed() -> None:
    """Draw a new state from os.urandom (done at import and after fork)."""
    _rng.seed(os.urandom(32))


if hasattr(os, "register_at_fork"):
    # gateway workers are forked: each must draw its own ids
    os.register_at_fork(after_in_child=seed)


def new_request_id() -> str:
    """A random version-4 UUID string, as str(uuid.uuid4()) formats one."""
    h = ((_bits(128) & _V4_KEEP) | _V4_SET).to_bytes(16, "big").hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
