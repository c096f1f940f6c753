"""DICOM images (``.dcm``) as 8-bit pictures, read with pydicom (the ``[medical]`` extra).

The stored values become what a radiologist's viewer shows: modality rescale (``RescaleSlope`` /
``RescaleIntercept``, so CT reads in Hounsfield units), then the VOI window of the file's own
``WindowCenter`` / ``WindowWidth`` (the first pair when there are several), or the image's min-max when it
has none, mapped linearly to 0..255 as DICOM PS3.3 C.11.2.1.2.1 defines; ``MONOCHROME1`` (white is
low) is inverted so that every image reads white-is-high. 12- and 16-bit, signed or not, are handled by
pydicom's pixel decoding. Multi-frame files, files without pixel data (structured reports, RT plans)
and non-DICOM files are refused with a message naming the file, and a folder reader skips them like
any unreadable image.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["DICOM_EXTENSIONS", "is_dicom_path", "dicom_header", "dicom_image", "window_to_uint8"]

DICOM_EXTENSIONS = (".dcm", ".dicom")


def is_dicom_path(path: str) -> bool:
    return str(path).lower().endswith(DICOM_EXTENSIONS)


def _pydicom():
    try:
        import pydicom
    except ImportError:
        raise ImportError("reading DICOM needs pydicom: pip install 'resnetlab[medical]' (or pip install "
                          "pydicom)") from None
    return pydicom


def _read(path: str, pixels: bool):
    pydicom = _pydicom()
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=not pixels)
    except pydicom.errors.InvalidDicomError as e:
        raise ValueError(f"{path}: not a DICOM file ({e})") from None
    except Exception as e:  # noqa: BLE001 - truncated or damaged: named, and skipped by the folder reader
        raise ValueError(f"{path}: an unreadable DICOM file ({type(e).__name__}: {e})") from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ValueError(f"{path}: multi-frame DICOM ({frames} frames); resnetlab reads one 2-D image per file: "
                         f"save each frame as a file of its own")
    if "Rows" not in ds or "Columns" not in ds or (pixels and "PixelData" not in ds):
        raise ValueError(f"{path}: DICOM without image pixel data (SOP class {ds.get('SOPClassUID', '?')}, "
                         f"modality {ds.get('Modality', '?')})")
    return ds


def dicom_header(path: str) -> tuple[int, int, str]:
    """(width, height, mode) from the header alone ("L" for grayscale, "RGB" for colour)."""
    ds = _read(path, pixels=False)
    return int(ds.Columns), int(ds.Rows), "RGB" if int(ds.get("SamplesPerPixel", 1)) == 3 else "L"


def _first(value) -> float | None:
    """A window tag's value, the first of several (pydicom gives a MultiValue then)."""
    if value is not None and hasattr(value, "__len__") and not isinstance(value, (str, bytes)):
        value = value[0] if len(value) else None
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def window_to_uint8(values: np.ndarray, center: float | None = None, width: float | None = None) -> np.ndarray:
    """DICOM's linear VOI function to 0..255; without a window, the values' own min-max range."""
    x = np.asarray(values, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"pixel data holds {int((~np.isfinite(x)).sum())} non-finite values")
    if center is None or width is None or width < 1:
        lo, hi = float(x.min()), float(x.max())
        scaled = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    elif width == 1:  # PS3.3 C.11.2.1.2.1 for w = 1: a step at c - 0.5
        scaled = (x > center - 0.5).astype(np.float64)
    else:
        scaled = (x - (center - 0.5)) / (width - 1) + 0.5
    return np.clip(np.round(scaled * 255.0), 0, 255).astype(np.uint8)


def dicom_image(path: str, window: tuple[float, float] | None = None) -> Image.Image:
    """The file's image as an 8-bit Pillow image: rescaled, windowed (``window`` = (centre, width) overrides
    the file's own), MONOCHROME1 inverted (see module doc)."""
    ds = _read(path, pixels=True)
    try:
        arr = ds.pixel_array
    except Exception as e:  # noqa: BLE001 - compressed syntax without a decoder, truncated data, ...
        raise ValueError(f"{path}: its pixel data cannot be decoded ({type(e).__name__}: {e})") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if arr.ndim == 3 and arr.shape[-1] == 3:  # colour (RGB, or YBR converted by pydicom)
        if photometric.startswith("YBR"):
            from pydicom.pixels import convert_color_space

            arr = convert_color_space(arr, photometric, "RGB")
        return Image.fromarray(window_to_uint8(arr) if arr.dtype != np.uint8 else arr, "RGB")
    if arr.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D image, got pixel data of shape {arr.shape}")
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    values = arr.astype(np.float64) * slope + intercept
    centre, width = window if window is not None else (_first(ds.get("WindowCenter")), _first(ds.get("WindowWidth")))
    try:
        out = window_to_uint8(values, centre, width)
    except ValueError as e:  # non-finite values after rescale
        raise ValueError(f"{path}: {e}") from None
    if photometric == "MONOCHROME1":
        out = 255 - out
    return Image.fromarray(out, "L")
