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

A request with an ``Idempotency-Key`` is answered once: its answer (status, headers, body) is
kept with its claim in the transaction that completes it (:func:`answer_to_keep`), and a retry
gets that answer again (:func:`replayed`); a retry whose request differs gets 422, one that
arrives while the first is still running in this process 409 + ``Retry-After``.
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
from apix_core.hashing import content_hash, deterministic_id
from apix_core.message import Message, MessageType, check_json_depth, check_json_input
from apix_core.processing.outcomes import Outcome, OutcomeKind
from apix_core.processing.unit_of_work import KeptAnswer
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
    request: dict[str, Any] = {
        "method": method.upper(),
        "path": path,
        "path_params": params,
        "query": dict(query or {}),
    }
    if key:
        request["idempotency_key"] = key
    return Message(
        message_id=message_id,
        tenant_id=tenant,
        type=MessageType.HTTP,
        payload=payload,
        metadata={"http": request},
    )


#: The largest answer (headers and body, as JSON text) kept for ``Idempotency-Key`` retries; a
#: larger one keeps its status only, and a retry gets that status with a ``duplicate`` body.
MAX_KEPT_ANSWER_BYTES = 8192


def request_hash(message: Message) -> str:
    """sha256 of what makes a request the same request: method, path, query and JSON body
    (parsed, so key order and whitespace do not count)."""
    meta = message.metadata["http"]
    return content_hash([meta["method"], meta["path"], meta["query"], message.payload])


def answer_to_keep(spec: ProcessorSpec, outcome: Outcome | None) -> KeptAnswer | None:
    """The answer a completed request with an ``Idempotency-Key`` keeps with its claim."""
    if outcome is None or outcome.kind is not OutcomeKind.COMPLETED or outcome.message is None:
        return None
    message = outcome.message
    meta = message.metadata.get("http")
    if not isinstance(meta, dict) or "idempotency_key" not in meta:
        return None  # without a key no retry can name this request again: nothing to keep
    response = response_for(outcome, spec)
    headers: str | None = json.dumps(response.headers, separators=(",", ":"))
    body: str | None = response.text()
    assert headers is not None and body is not None
    if len(headers.encode()) + len(body.encode()) > MAX_KEPT_ANSWER_BYTES:
        headers = body = None
    return KeptAnswer(
        message.message_id, request_hash(message), response.status_code, headers, body
    )


def replayed(
    kept: KeptAnswer | None, message: Message, outcome: Outcome, spec: ProcessorSpec
) -> HttpResponse:
    """The answer to a retry (a ``duplicate`` outcome) of a request with an
    ``Idempotency-Key``: the first answer, or 422 when the retry is another request."""
    if kept is None:  # a claim kept without its answer (made before migration 0008)
        return response_for(outcome, spec)
    if kept.request_hash and kept.request_hash != request_hash(message):
        return HttpResponse(
            422,
            {
                "error": "IDEMPOTENCY_KEY_REUSED",
                "message": "this Idempotency-Key was used for a different request (method, "
                "path, query or body); send a new key for a new request, or the same request "
                "to get its answer again",
            },
        )
    if kept.body is None or kept.headers is None:
        return HttpResponse(
            kept.status,
            {
                "message_id": message.message_id,
                "status": OutcomeKind.DUPLICATE.value,
                "note": f"the first answer was over {MAX_KEPT_ANSWER_BYTES} bytes: only its "
                "status was kept",
            },
        )
    return HttpResponse(kept.status, json.loads(kept.body), json.loads(kept.headers))


def in_progress(message: Message) -> HttpResponse:
    """409 for a retry that arrives while the first request is still being processed."""
    return HttpResponse(
        409,
        {
            "message_id": message.message_id,
            "error": "REQUEST_IN_PROGRESS",
            "message": "a request with this Idempotency-Key is still being processed; "
            "retry after the Retry-After delay to get its answer",
        },
        {"Content-Type": "application/json", "Retry-After": "1"},
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
