"""Small dependency-free helpers: TensorBoard event files and progress reporting."""

from .progress import Progress, format_duration
from .tensorboard import EventWriter, read_scalars

__all__ = ["EventWriter", "read_scalars", "Progress", "format_duration"]
