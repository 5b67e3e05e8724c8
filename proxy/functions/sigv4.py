"""AWS Signature Version 4 for the ``remote`` runtime's Invoke calls (checked against
botocore's signer in the tests)."""
from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import quote, unquote


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def sign(method: str, host: str, path: str, query: str, headers: dict, body: bytes, *,
         access_key: str, secret_key: str, region: str, service: str = "lambda",
         session_token: str | None = None, now: float | None = None) -> dict:
    """Headers to add (Authorization, X-Amz-Date, X-Amz-Content-Sha256 is not used by
    Lambda; X-Amz-Security-Token when a session token is given)."""
    t = time.gmtime(now if now is not None else time.time())
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", t)
    day = amz_date[:8]
    out = {"X-Amz-Date": amz_date}
    if session_token:
        out["X-Amz-Security-Token"] = session_token
    all_headers = {k.lower(): " ".join(str(v).strip().split()) for k, v in headers.items()}
    all_headers["host"] = host
    for k, v in out.items():
        all_headers[k.lower()] = v
    names = sorted(all_headers)
    canonical_headers = "".join(f"{n}:{all_headers[n]}\n" for n in names)
    signed = ";".join(names)
    # Lambda (like every service but S3) double-encodes the path in the canonical request
    canonical_path = quote(quote(path, safe="/~"), safe="/~") if path else "/"
    pairs = []
    if query:
        for part in query.split("&"):
            k, _, v = part.partition("=")
            pairs.append((quote(unquote(k), safe="-_.~"), quote(unquote(v), safe="-_.~")))
    canonical_query = "&".join(f"{k}={v}" for k, v in sorted(pairs))
    payload_hash = hashlib.sha256(body).hexdigest()
    creq = "\n".join([method, canonical_path, canonical_query, canonical_headers, signed, payload_hash])
    scope = f"{day}/{region}/{service}/aws4_request"
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()])
    k = _hmac(("AWS4" + secret_key).encode(), day)
    k = _hmac(k, region)
    k = _hmac(k, service)
    k = _hmac(k, "aws4_request")
    sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    out["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
                            f"SignedHeaders={signed}, Signature={sig}")
    return out
