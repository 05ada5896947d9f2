"""HTTP triggers, platform-neutral: route matching, request → :class:`Message`, and the one
mapping of an :class:`Outcome` to an HTTP response that every adapter (``apix serve``, API
Gateway, Azure Functions) answers with.

An HTTP processor may answer with a status and body of its choosing: it returns an
:class:`HttpResponse` (or ``ProcessingResult.respond(body, status)``), and that is the answer.
Otherwise the status mapping: 200 (done), 202 (done, work queued: the processor produces),
400 (validation — a ``payload=`` model's failures listed per field under ``"fields"`` — bad
JSON, nesting over ``MAX_JSON_DEPTH``), 404 (no route), 413 (body over ``MAX_INPUT_BYTES``),
503 + ``Retry-After`` (retryable), 500 (unexpected). Error bodies are JSON
``{"error": CODE, "message": ...}`` without stack traces.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from apix_core.constants import MAX_JSON_DEPTH, MAX_MESSAGE_ID_CHARS
from apix_core.errors import (
    InputTooLargeError,
    InvalidMessageIdError,
    InvalidTenantError,
    JsonTooDeepError,
    MalformedMessageError,
    MissingTenantError,
)
from apix_core.hashing import deterministic_id
from apix_core.message import Message, MessageType, check_json_depth, check_json_input
from apix_core.processing.outcomes import Outcome, OutcomeKind
from apix_core.processor import ProcessorSpec
from apix_core.result import HttpResponse as HttpResponse
from apix_core.tenancy import TENANT_ID_RULE, is_valid_tenant_id


class HttpRejected(Exception):
    """A request that gets an answer without running a processor (the response carries it)."""

    def __init__(self, response: HttpResponse) -> None:
        super().__init__(response.status_code)
        self.response = response


def match_route(
    specs: Iterable[ProcessorSpec], method: str, path: str
) -> tuple[ProcessorSpec, dict[str, str]] | None:
    """The processor whose ``route=`` matches, and the path parameters."""
    for spec in specs:
        if spec.route is None or spec.route.method != method.upper():
            continue
        params = match_path(spec.route.path, path)
        if params is not None:
            return spec, params
    return None


def match_path(pattern: str, path: str) -> dict[str, str] | None:
    p_parts = pattern.strip("/").split("/")
    a_parts = path.split("?", 1)[0].strip("/").split("/")
    if len(p_parts) != len(a_parts):
        return None
    params: dict[str, str] = {}
    for p, a in zip(p_parts, a_parts, strict=True):
        if p.startswith("{") and p.endswith("}"):
            params[p[1:-1]] = a
        elif p != a:
            return None
    return params


def not_found(method: str, path: str) -> HttpResponse:
    return HttpResponse(404, {"error": "NOT_FOUND", "message": f"no route {method} {path}"})


def request_message(
    app_name: str,
    spec: ProcessorSpec,
    params: dict[str, str],
    *,
    method: str,
    path: str,
    headers: Mapping[str, str] | None,
    body: bytes | str | None,
    query: Mapping[str, str] | None,
    tenant_header: str,
    default_tenant: str | None,
) -> Message:
    """The message of one request; raises :class:`HttpRejected` with a 400 for bad input.

    The tenant comes from ``tenant_header`` (else ``default_tenant``); an ``Idempotency-Key``
    header makes retries of the same request one message (exactly-once)."""
    lower = {k.lower(): v for k, v in (headers or {}).items()}
    tenant = lower.get(tenant_header.lower()) or default_tenant
    if not tenant:
        raise HttpRejected(
            error_response(400, MissingTenantError(f"missing {tenant_header} header"))
        )
    if not is_valid_tenant_id(tenant):
        # The header is caller input: refuse it before it scopes anything (or names a file).
        raise HttpRejected(
            error_response(
                400, InvalidTenantError(f"invalid {tenant_header} header: use {TENANT_ID_RULE}")
            )
        )
    try:
        payload = json_object(body)
        key = lower.get("idempotency-key")
        if key is not None:
            key = idempotency_key(key)
    except InputTooLargeError as exc:
        raise HttpRejected(error_response(413, exc)) from None
    except (MalformedMessageError, InvalidMessageIdError) as exc:
        raise HttpRejected(error_response(400, exc)) from None
    if spec.payload_model is not None:
        # Checked here too (the processor checks it again) so that the caller gets each field's
        # error, and a rejected body leaves no record: the same Idempotency-Key may be retried.
        problems = field_errors(spec.payload_model, payload)
        if problems:
            raise HttpRejected(
                HttpResponse(
                    400,
                    {
                        "error": "INVALID_PAYLOAD",
                        "message": f"request body does not match {spec.payload_model.__name__}: "
                        + "; ".join(f"{p['field']}: {p['message']}" for p in problems),
                        "fields": problems,
                    },
                )
            )
    message_id = (
        deterministic_id("http", app_name, spec.name, tenant, key) if key else str(uuid.uuid4())
    )
    return Message(
        message_id=message_id,
        tenant_id=tenant,
        type=MessageType.HTTP,
        payload=payload,
        metadata={
            "http": {
                "method": method.upper(),
                "path": path,
                "path_params": params,
                "query": dict(query or {}),
            }
        },
    )


_WHERE = re.compile(r" \(at [^()\s]+:\d+\)$")


def response_for(outcome: Outcome, spec: ProcessorSpec) -> HttpResponse:
    """The HTTP answer to a processed request."""
    message_id = outcome.message.message_id if outcome.message else outcome.delivery.message_id
    base: dict[str, Any] = {"message_id": message_id, "status": outcome.kind.value}
    if outcome.kind in (OutcomeKind.COMPLETED, OutcomeKind.DUPLICATE):
        result = outcome.result
        if result is not None and result.http is not None:
            return result.http
        body_out: dict[str, Any] = dict(base)
        if result is not None:
            body_out["entities_created"] = result.entities_created
            body_out["metadata"] = result.processing_metadata
        return HttpResponse(202 if spec.produces else 200, body_out)
    error = outcome.error
    assert error is not None
    # The client gets the error without the server's source location (kept in the logs and
    # the stored error).
    message = _WHERE.sub("", error.message)
    if spec.read_only:  # a read records nothing: no "dead_letter" or "retry" to report
        del base["status"]
    if outcome.kind is OutcomeKind.RETRY:
        return HttpResponse(
            503,
            {**base, "error": error.code, "message": message},
            {
                "Content-Type": "application/json",
                "Retry-After": str(max(1, int(outcome.delay_seconds))),
            },
        )
    status = 400 if error.category.value == "validation" else 500
    return HttpResponse(status, {**base, "error": error.code, "message": message})


def field_errors(model: type[BaseModel], payload: dict[str, Any]) -> list[dict[str, str]]:
    """``[{"field": "customer.email", "message": ...}]`` for each problem (no input values:
    they may be personal data)."""
    try:
        model.model_validate(payload)
    except PydanticValidationError as exc:
        return [
            {"field": ".".join(map(str, e["loc"])) or "(body)", "message": e["msg"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
    except Exception:
        return []
    return []


def error_response(status: int, exc: Exception) -> HttpResponse:
    code = getattr(exc, "code", "ERROR")
    return HttpResponse(status, {"error": code, "message": str(exc)})


def json_object(body: bytes | str | None) -> dict[str, Any]:
    """The JSON object of a request body; bounded in size (``MAX_INPUT_BYTES``) and nesting
    (``MAX_JSON_DEPTH``). Raises :class:`MalformedMessageError` subclasses only."""
    if body is None or body in (b"", ""):
        return {}
    if not isinstance(body, str | bytes | bytearray):
        raise MalformedMessageError(f"request body must be bytes or text, not {type(body)}")
    check_json_input(body, "request body")
    try:
        obj = json.loads(body)
    except RecursionError:
        raise JsonTooDeepError(f"request body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedMessageError(f"request body is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise MalformedMessageError("request body must be a JSON object")
    check_json_depth(obj, "request body")
    return obj


def idempotency_key(value: str) -> str:
    """The ``Idempotency-Key`` header if usable: 1-255 printable characters, valid UTF-8."""
    if not value or len(value) > MAX_MESSAGE_ID_CHARS or not _PRINTABLE_KEY.fullmatch(value):
        raise InvalidMessageIdError(
            f"invalid Idempotency-Key header: use 1-{MAX_MESSAGE_ID_CHARS} printable characters"
        )
    return value


_PRINTABLE_KEY = re.compile("[^\x00-\x1f\x7f\ud800-\udfff]+")
