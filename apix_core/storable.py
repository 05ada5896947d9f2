"""Values from outside made storable in any metadata column: escaped, clipped, or encoded.

A dead letter must be writable for ANY input (a foreign message's overlong or NUL-bearing
tenant attribute, a body that is not UTF-8): PostgreSQL text refuses NUL and
``varchar(n)`` refuses longer values, so invalid values are recorded escaped and clipped to
their column, and a body text cannot hold is kept as base64 with
:data:`BODY_ENCODING_ATTRIBUTE` saying so, which replay undoes to the original bytes.
"""

from __future__ import annotations

import base64
import re

#: Message attribute marking a stored body as base64 of the original bytes.
BODY_ENCODING_ATTRIBUTE = "apix_body_encoding"
BASE64 = "base64"
#: Longest attribute value kept with a dead letter.
MAX_ATTRIBUTE_CHARS = 1000
#: Most attributes kept with a dead letter.
MAX_ATTRIBUTES = 50

# NUL and other C0 controls but tab/newline/CR, DEL, and unpaired surrogates (not UTF-8).
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_control(text: str) -> str:
    """``text`` with NUL, control characters and unpaired surrogates as ``\\xNN``/``\\uNNNN``."""
    return _UNSAFE.sub(_escape_char, text)


def clip(text: str, limit: int) -> str:
    """At most ``limit`` characters; a clipped value ends with ``…``."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def column_text(value: object, limit: int) -> str:
    """``value`` as text any text column of ``limit`` characters accepts (escaped, clipped).

    Escaping and clipping keep an invalid identifier invalid: the escapes add a backslash and
    a clipped value ends with ``…``, neither of which a tenant id or queue name may hold."""
    if isinstance(value, bytes):
        text = value.decode("utf-8", "backslashreplace")
    else:
        text = value if isinstance(value, str) else repr(value)
    return clip(escape_control(text), limit)


def optional_column_text(value: object, limit: int) -> str | None:
    return None if value is None or value == "" else column_text(value, limit)


def storable_body(body: str | bytes | bytearray) -> tuple[str, bool]:
    """``(text, encoded)``: the body itself when text columns can hold it, else base64 of its
    bytes (``encoded``) — NUL, invalid UTF-8 or unpaired surrogates."""
    if isinstance(body, str):
        if "\x00" not in body and _UNSAFE.search(body) is None:
            return body, False
        raw = body.encode("utf-8", "surrogatepass")
    else:
        raw = bytes(body)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            if _UNSAFE.search(text) is None:
                return text, False
    return base64.b64encode(raw).decode("ascii"), True


def restore_body(text: str, attributes: dict[str, str]) -> str | bytes:
    """The original body of a stored one (:func:`storable_body`)."""
    if attributes.get(BODY_ENCODING_ATTRIBUTE) == BASE64:
        try:
            return base64.b64decode(text.encode("ascii"), validate=True)
        except (ValueError, UnicodeEncodeError):  # not ours (a sender set the attribute)
            return text
    return text


def storable_attributes(attributes: object) -> dict[str, str]:
    """Message attributes as ``{str: str}`` any JSON column takes (escaped, clipped, capped)."""
    if not isinstance(attributes, dict):
        return {}
    out: dict[str, str] = {}
    for key, value in list(attributes.items())[:MAX_ATTRIBUTES]:
        out[column_text(key, 255)] = column_text(value, MAX_ATTRIBUTE_CHARS)
    return out


__all__ = [
    "BASE64",
    "BODY_ENCODING_ATTRIBUTE",
    "clip",
    "column_text",
    "escape_control",
    "optional_column_text",
    "restore_body",
    "storable_attributes",
    "storable_body",
]
