"""The baseline: a bare Litestar endpoint at the same path that answers 202 without Redis."""

import os

from litestar import Litestar, Request, Response, post


@post("/v1/messages", status_code=202)
async def submit(request: Request) -> Response[dict[str, str]]:
    await request.body()
    return Response({"message_id": "msg_" + os.urandom(12).hex(), "status": "received"}, status_code=202)


@post("/webhooks/{provider:str}", status_code=200)
async def webhook(request: Request) -> Response[bytes]:
    """The webhook baseline: read the body, answer at once, store nothing."""
    await request.body()
    return Response(b"success", media_type="text/plain")


app = Litestar(route_handlers=[submit, webhook], debug=False)
