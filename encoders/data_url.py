"""Turn an OpenAI-style ``image_url`` string into image bytes; only ``data:image/...;base64,`` URLs.

Remote URLs are refused on purpose: the server never fetches from the network on a user's behalf.
The decoded bytes still need ``encoders.image_io.load_image`` to check the image itself.
"""

from __future__ import annotations

import base64
import binascii
import re

from triptych.errors import RequestError

_EXAMPLE = "data:image/png;base64,<base64 bytes>"
# data:image/<subtype>[;param=value]*;base64,<payload>
_DATA_URL = re.compile(
    r"^data:(?P<type>image/[A-Za-z0-9.+-]+)(?P<params>(?:;[A-Za-z0-9_.+-]+=[^;,]*)*);base64,(?P<payload>.*)$",
    re.IGNORECASE | re.DOTALL,
)
_BASE64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")


def decode_image_url(url: str, field: str, max_bytes: int) -> bytes:
    """Return the bytes in a ``data:image/<type>;base64,<...>`` URL.

    ``max_bytes`` is the deployment's ``Limits.max_image_bytes``: a payload that would decode to more
    is rejected from its length alone, before anything is decoded into memory.
    The base64 payload is validated strictly (standard alphabet, correct padding, no whitespace).
    The declared ``image/<type>`` is not trusted: ``load_image`` sniffs the real format.
    ``http(s)://`` URLs and anything else raise ``RequestError(field, ...)``.
    """
    if not isinstance(url, str):
        raise RequestError(field, f"expected a string URL, got {type(url).__name__}; send {_EXAMPLE}")
    head = url[:16].strip().lower()
    if head.startswith(("http://", "https://")):
        raise RequestError(
            field, f"remote image URLs are not fetched by this server; send the image inline as {_EXAMPLE}"
        )
    if not head.startswith("data:"):
        shown = url[:32] + ("..." if len(url) > 32 else "")
        raise RequestError(
            field, f"unsupported image URL {shown!r}; only data: URLs are accepted, e.g. {_EXAMPLE}"
        )

    match = _DATA_URL.match(url)
    if match is None:
        raise RequestError(
            field, f"malformed data URL; expected {_EXAMPLE} (media type image/*, base64 encoded)"
        )
    payload = match.group("payload")
    if not payload:
        raise RequestError(field, "data URL has an empty base64 payload")
    # Size from the length alone (before the alphabet scan and the decode): a huge payload costs nothing.
    size = _decoded_size(payload) if len(payload) % 4 == 0 else None
    if size is not None and size > max_bytes:
        raise RequestError(field, f"image in data URL is {size} bytes; at most {max_bytes} bytes allowed")
    if size is None or _BASE64.match(payload) is None:
        raise RequestError(
            field,
            "data URL payload is not valid base64 (standard alphabet A-Z a-z 0-9 + /, '=' padding to a "
            "multiple of 4 characters, no whitespace)",
        )
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(field, f"data URL payload is not valid base64 ({e})") from None


def _decoded_size(payload: str) -> int:
    """Bytes that a padded base64 ``payload`` (length a multiple of 4) decodes to, without decoding."""
    padding = 2 if payload.endswith("==") else 1 if payload.endswith("=") else 0
    return len(payload) // 4 * 3 - padding
