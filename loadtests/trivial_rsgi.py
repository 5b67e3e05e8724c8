"""The smallest RSGI app: a fixed response, no work. granian's own ceiling (see
loadtests/frontend_boundary.py)."""

BODY = b'{"id": 1, "name": "rex"}'
HEADERS = [("content-type", "application/json")]


class App:
    async def __rsgi__(self, scope, proto):
        proto.response_bytes(200, HEADERS, BODY)


app = App()
