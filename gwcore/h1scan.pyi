"""Type stub for gwcore.h1scan (compiled) and its pure-Python twin gwcore._h1scan_py.

What is taken and what is returned is documented in gwcore._h1scan_py's module docstring;
anything else gives None and goes to llhttp.
"""

def scan_request(
    data: bytes, limit: int
) -> tuple[str, str, str, list[tuple[str, str]], str, bool] | None: ...
def scan_response(
    data: bytes,
) -> tuple[int, list[tuple[str, str]], list[tuple[str, str]], int, bool, int] | None: ...
