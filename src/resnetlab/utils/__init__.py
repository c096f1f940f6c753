"""Small dependency-free helpers: progress reporting (atomic files: ``utils.fileio``; hardware: ``utils.hardware``)."""

from .progress import Progress, format_duration

__all__ = ["Progress", "format_duration"]
