"""Request bytes -> the network's input tensor, with the checks a public endpoint needs: the image's size is
read from its header and refused before any pixel is decoded (decompression bombs), formats are a short
allow-list, and a truncated or corrupt file is a 422, not a crash."""

from __future__ import annotations

import io
import warnings
from typing import Callable

import torch
from PIL import Image, UnidentifiedImageError

from .errors import ServeError

__all__ = ["decode_image", "FORMATS"]

FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM")  # what PIL decodes safely and people upload


def decode_image(data: bytes, name: str, *, mode: str, max_pixels: int,
                 transform: Callable[[Image.Image], torch.Tensor]) -> torch.Tensor:
    """One image file's bytes as the model's (C, H, W) input; ``name`` is used in messages only."""
    if not data:
        raise ServeError(422, "empty", f"{name}: the file is empty")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data), formats=FORMATS)
        except UnidentifiedImageError:
            raise ServeError(415, "not_an_image", f"{name}: not an image this server reads "
                                                  f"({', '.join(FORMATS)})") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ServeError(413, "too_many_pixels", f"{name}: {e}") from None
        except Exception as e:  # noqa: BLE001 - a header PIL cannot parse
            raise ServeError(422, "bad_image", f"{name}: unreadable image header ({type(e).__name__}: {e})") from None
        with im:
            w, h = im.size
            if w * h > max_pixels:
                raise ServeError(413, "too_many_pixels", f"{name}: {w}x{h} = {w * h:,} pixels, more than the "
                                                         f"{max_pixels:,} this server decodes")
            if w == 0 or h == 0:
                raise ServeError(422, "bad_image", f"{name}: an image of {w}x{h} pixels has nothing to classify")
            try:
                im.load()
                img = im.convert(mode)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
                raise ServeError(413, "too_many_pixels", f"{name}: {e}") from None
            except Exception as e:  # noqa: BLE001 - truncated or corrupt pixel data
                raise ServeError(422, "bad_image", f"{name}: a {im.format} image that cannot be decoded "
                                                   f"({type(e).__name__}: {e})") from None
    return transform(img)
