"""API Gateway REST (payload 1.0), HTTP API (2.0) and Function URL (2.0) events ↔ apix HTTP.

The tenant: by default the core's tenant header (``X-Tenant-Id``). When ``APIX_TENANT_CLAIM``
names a claim, the tenant comes from the authorizer instead — JWT claims
(``requestContext.authorizer.jwt.claims``), REST Cognito claims
(``requestContext.authorizer.claims``) or a Lambda authorizer's context
(``requestContext.authorizer.lambda`` on 2.0, ``requestContext.authorizer`` on 1.0) — and a
tenant header sent by the client is ignored (only the authorizer is trusted).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from apix_aws.errors import MalformedEventError

TENANT_CLAIM_ENV = "APIX_TENANT_CLAIM"


@dataclass(slots=True)
class HttpRequest:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | str | None = None
    query: dict[str, str] = field(default_factory=dict)


class BadBodyEncoding(MalformedEventError):
    """``isBase64Encoded`` is true but the body is not base64 (answered with 400)."""


def is_http(event: Mapping[str, Any]) -> bool:
    if "httpMethod" in event and "path" in event:
        return True
    context = event.get("requestContext")
    return (
        event.get("version") == "2.0"
        and isinstance(context, Mapping)
        and isinstance(context.get("http"), Mapping)
    )


def parse_request(event: Mapping[str, Any], tenant_header: str) -> HttpRequest:
    """The request of a 1.0 or 2.0 event (raises :class:`MalformedEventError`)."""
    context = event.get("requestContext")
    context = context if isinstance(context, Mapping) else {}
    if event.get("version") == "2.0":
        http = context.get("http")
        method = http.get("method") if isinstance(http, Mapping) else None
        path = event.get("rawPath")
        stage = context.get("stage")
        # A named stage (not $default) prefixes rawPath: routes are written without it.
        if isinstance(stage, str) and stage != "$default" and isinstance(path, str):
            prefix = f"/{stage}"
            if path == prefix or path.startswith(prefix + "/"):
                path = path[len(prefix) :] or "/"
        headers = _strings(event.get("headers"))
        cookies = event.get("cookies")
        if isinstance(cookies, list) and cookies:
            headers["cookie"] = "; ".join(c for c in cookies if isinstance(c, str))
        authorizer = context.get("authorizer")
        claims = _claims_v2(authorizer if isinstance(authorizer, Mapping) else {})
    else:
        method = event.get("httpMethod")
        path = event.get("path")
        headers = _strings(event.get("headers"))
        for name, values in _multi(event.get("multiValueHeaders")).items():
            headers.setdefault(name, ",".join(values))
        authorizer = context.get("authorizer")
        claims = _claims_v1(authorizer if isinstance(authorizer, Mapping) else {})
    if not isinstance(method, str) or not method or not isinstance(path, str) or not path:
        raise MalformedEventError("API Gateway event without an HTTP method or path")
    query = _strings(event.get("queryStringParameters"))
    body = _body(event)
    claim = os.environ.get(TENANT_CLAIM_ENV)
    if claim:
        lowered = tenant_header.lower()
        headers = {k: v for k, v in headers.items() if k.lower() != lowered}
        value = claims.get(claim)
        if isinstance(value, str | int) and str(value):
            headers[tenant_header] = str(value)
    return HttpRequest(method.upper(), path, headers, body, query)


def proxy_response(status: int, body: str, headers: Mapping[str, str]) -> dict[str, Any]:
    """The proxy-integration result (the same shape serves 1.0 and 2.0)."""
    return {
        "statusCode": status,
        "headers": dict(headers),
        "body": body,
        "isBase64Encoded": False,
    }


def _body(event: Mapping[str, Any]) -> bytes | str | None:
    body = event.get("body")
    if body is None:
        return None
    if not isinstance(body, str):
        raise MalformedEventError("API Gateway event body is not a string")
    if event.get("isBase64Encoded") is True:
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise BadBodyEncoding("request body is marked base64 but is not base64") from None
    return body


def _strings(raw: object) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): str(v) for k, v in raw.items() if isinstance(v, str | int | float)}


def _multi(raw: object) -> dict[str, list[str]]:
    if not isinstance(raw, Mapping):
        return {}
    return {
        str(k): [str(x) for x in v if isinstance(x, str)]
        for k, v in raw.items()
        if isinstance(v, list)
    }


def _claims_v2(authorizer: Mapping[str, Any]) -> Mapping[str, Any]:
    jwt = authorizer.get("jwt")
    if isinstance(jwt, Mapping) and isinstance(jwt.get("claims"), Mapping):
        return jwt["claims"]  # type: ignore[no-any-return]
    lam = authorizer.get("lambda")
    return lam if isinstance(lam, Mapping) else {}


def _claims_v1(authorizer: Mapping[str, Any]) -> Mapping[str, Any]:
    claims = authorizer.get("claims")
    if isinstance(claims, Mapping):
        return claims
    return authorizer  # a Lambda authorizer's context sits directly under authorizer
