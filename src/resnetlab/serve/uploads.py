"""The images of a request: every file of a multipart form, or the raw body of an ``image/*`` request."""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from .config import ServeConfig
from .errors import ServeError

__all__ = ["read_images"]

RAW_TYPES = ("image/", "application/octet-stream")


async def read_images(request: Request, cfg: ServeConfig) -> list[tuple[str, bytes]]:
    """(file name, bytes) per image; refusals name what was wrong (415 for a type we do not read, 413 for too
    many files, 422 for a malformed form or no image in it)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        return await _form_images(request, cfg)
    if ctype.startswith(RAW_TYPES):
        body = await request.body()
        if not body:
            raise ServeError(422, "empty", "the request body is empty: send an image")
        return [("body", body)]
    got = f"Content-Type {ctype!r}" if ctype else "no Content-Type"
    raise ServeError(415, "unsupported_media_type", f"{got}: send multipart/form-data with the image in field "
                                                    "'file', or the raw image with an image/* type")


async def _form_images(request: Request, cfg: ServeConfig) -> list[tuple[str, bytes]]:
    try:
        form = await request.form(max_files=cfg.max_files, max_fields=cfg.max_files + 16)
    except HTTPException as e:  # Starlette's parser refusals, re-said with our limits
        text = str(e.detail)
        if text.startswith("Too many files"):
            raise ServeError(413, "too_many_files", f"more than {cfg.max_files} files in one request "
                                                    "(--max-files)") from None
        if text.startswith("Too many fields"):
            raise ServeError(413, "too_many_files", f"more than {cfg.max_files + 16} form fields") from None
        raise ServeError(422, "bad_multipart", f"the multipart form cannot be parsed: {text}") from None
    try:
        files = [(f.filename or key, await f.read()) for key, f in form.multi_items() if isinstance(f, UploadFile)]
    finally:
        await form.close()
    if not files:
        raise ServeError(422, "no_image", "the form holds no file: send the image in field 'file'")
    return files
