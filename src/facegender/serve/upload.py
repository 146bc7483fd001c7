"""Read one uploaded image from a request, refusing hostile input before it reaches a decoder.

Two ways in: a multipart form with the image in field ``file`` (what browsers and ``curl -F``
send), or the raw bytes as the body with an ``image/*`` (or ``application/octet-stream``)
content type. The size limit is checked twice: against ``Content-Length`` before anything is
read, and against the bytes actually streamed (a client may lie or send chunked).
"""

from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

FIELD = "file"
# Room for the multipart boundary and part headers on top of the image itself.
MULTIPART_SLACK = 64 * 1024
RAW_TYPES = ("application/octet-stream",)
HOW = f"send multipart/form-data with the image in field '{FIELD}', or the raw bytes as image/*"


class UploadError(Exception):
    """A client mistake, reported as ``{"error": message}`` with an HTTP 4xx ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def _is_image_type(ctype: str) -> bool:
    return ctype.startswith("image/") or ctype in RAW_TYPES


async def read_upload(request: Request, max_bytes: int) -> bytes:
    """The uploaded image's bytes; raises :class:`UploadError` (400/413/415) otherwise."""
    ctype = media_type(request.headers.get("content-type"))
    if ctype == "multipart/form-data":
        body = await read_body(request, max_bytes + MULTIPART_SLACK, max_bytes)
        data = await _form_file(request, body)
    elif _is_image_type(ctype):
        data = await read_body(request, max_bytes, max_bytes)
    else:
        raise UploadError(415, f"unsupported content type {ctype or '(none)'!r}: {HOW}")
    if not data:
        raise UploadError(400, "empty upload")
    if len(data) > max_bytes:
        raise UploadError(413, _too_large(max_bytes))
    return data


async def read_body(request: Request, limit: int, max_bytes: int) -> bytes:
    """The whole body, never holding more than ``limit`` bytes of it."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise UploadError(400, "invalid Content-Length header") from None
        if n > limit:
            raise UploadError(413, _too_large(max_bytes))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise UploadError(413, _too_large(max_bytes))
        chunks.append(chunk)
    return b"".join(chunks)


async def _form_file(request: Request, body: bytes) -> bytes:
    """Parse an already size-checked multipart body and return field ``file``'s bytes."""

    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=8)
    except HTTPException as e:  # Starlette reports malformed multipart this way
        raise UploadError(400, f"malformed multipart body: {e.detail}") from None
    except Exception as e:  # python-multipart's own parse errors
        raise UploadError(400, f"malformed multipart body: {e}") from None
    try:
        part = form.get(FIELD)
        if part is None:
            raise UploadError(400, f"no field '{FIELD}' in the form: {HOW}")
        if not isinstance(part, UploadFile):
            raise UploadError(400, f"field '{FIELD}' must be a file, not text")
        ptype = media_type(part.content_type)
        if ptype and not _is_image_type(ptype):
            raise UploadError(415, f"unsupported file type {ptype!r}: upload an image")
        return await part.read()
    finally:
        await form.close()


def query_min_confidence(request: Request) -> float | None:
    """The ``?min_confidence=P`` query parameter (None when absent); 400 when not in 0.5-1."""
    from facegender.abstain import check_min_confidence

    raw = request.query_params.get("min_confidence")
    if raw is None or raw == "":
        return None
    try:
        return check_min_confidence(float(raw))
    except ValueError as e:
        msg = str(e) if "between" in str(e) else f"min_confidence must be a number, not {raw!r}"
        raise UploadError(400, msg) from None


def query_int(request: Request, name: str) -> int | None:
    """An optional non-negative integer query parameter; 400 otherwise."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise UploadError(400, f"{name} must be a non-negative integer, not {raw!r}")
    return int(raw)


def query_flag(request: Request, name: str, default: bool = True) -> bool:
    """An optional true/false query parameter (1/0, yes/no accepted); 400 otherwise."""
    raw = (request.query_params.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise UploadError(400, f"{name} must be true or false, not {raw!r}")


def _too_large(max_bytes: int) -> str:
    return f"upload too large: the limit is {max_bytes} bytes ({max_bytes / 2**20:.1f} MiB)"
