"""The OpenAPI document, completed with what FastAPI cannot infer from the routes.

- every ``application/octet-stream`` body gets a binary schema, and ``maxLength`` (bytes) from the
  Settings field its route names in ``x-hushtype-limit``;
- ``POST /v1/sessions`` lists the ``appKey`` security scheme only if the server has an app key
  (otherwise it needs no credential);
- every operation documents the ``X-Request-ID`` response header;
- ``info.description`` points at the wire-format document.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from server.api.config import Settings

__all__ = ["install_openapi"]

_BINARY = {"type": "string", "format": "binary"}
_REQUEST_ID = {
    "X-Request-ID": {
        "description": "this request's id (the client's own if it sent a plain one); also in error bodies",
        "schema": {"type": "string"},
    }
}
_DESCRIPTION = """Next-word suggestions computed on CKKS ciphertexts; the server never sees the text.

A device: `GET /v1/model` (HE parameters, vocabulary) and its encoder (`GET /v1/model/weights`; the
head stays on the server), generates a secret key, uploads its public evaluation keys with
`POST /v1/sessions` (gets a session id and bearer token), optionally an encrypted adapter, then posts
encrypted queries and decrypts the logits. The byte layouts of the keys, queries and logits are
specified in `docs/wire-format.md` of the hushtype repository.

Errors are JSON `{"detail", "request_id"}`; 429 and 503 carry `Retry-After`. An unknown session and a
wrong token both answer 401. The binary bodies are schema-valid as any bytes, but bytes that do not
follow docs/wire-format.md (or keys/ciphertexts for other parameters or another session) get 400 with
the reason: JSON Schema cannot express those formats.
"""


def _complete(schema: dict, settings: Settings) -> dict:
    for path, operations in schema.get("paths", {}).items():
        for method, op in operations.items():
            body = op.get("requestBody")
            if body is not None:
                limit = body.pop("x-hushtype-limit", None)
                for media in body.get("content", {}).values():
                    media.setdefault("schema", dict(_BINARY))
                    if limit is not None:
                        media["schema"]["maxLength"] = int(getattr(settings, limit))
                if limit is not None:
                    body["description"] += f" (at most {getattr(settings, limit)} bytes)"
            for response in op.get("responses", {}).values():
                response.setdefault("headers", {}).update(_REQUEST_ID)
                octets = response.get("content", {}).get("application/octet-stream")
                if octets is not None and not octets.get("schema"):
                    octets["schema"] = dict(_BINARY)
            if path == "/v1/sessions" and method == "post" and settings.app_key is None:
                op.pop("security", None)
    return schema


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Make ``app.openapi()`` return the completed document (built once, then cached)."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            raw = get_openapi(
                title=app.title,
                version=app.version,
                description=_DESCRIPTION,
                routes=app.routes,
            )
            app.openapi_schema = _complete(raw, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
