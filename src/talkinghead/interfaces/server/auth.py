"""The bearer token: with one set by the operator, every route and the stream need `Authorization: Bearer TOKEN`."""
from __future__ import annotations

import secrets

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from .errors import ServiceError


def token_ok(authorization: str | None, token: str | None) -> bool:
    """Whether an Authorization header carries the token (always true when no token is set)."""
    if token is None:
        return True
    scheme, _, credentials = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(credentials.strip().encode(), token.encode())


def unauthorized() -> ServiceError:
    """401, with the header that tells clients to use a bearer token."""
    return ServiceError("unauthorized", "missing or wrong bearer token\n"
                        "  how to fix: send the header `Authorization: Bearer <token>` the operator gave you",
                        headers={"WWW-Authenticate": "Bearer"})


def token_dependencies(token: str | None) -> list:
    """The route dependencies that refuse a request without the token (none when no token is set); they also
    declare the bearer scheme in the OpenAPI description."""
    if token is None:
        return []
    bearer = HTTPBearer(auto_error=False, description="the token the operator started the server with")

    async def require_token(request: Request, _=Depends(bearer)) -> None:
        """401 unless the request carries the bearer token."""
        if not token_ok(request.headers.get("authorization"), token):
            raise unauthorized()

    return [Depends(require_token)]
