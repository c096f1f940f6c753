"""One typed description of a model's evaluation preprocessing: :class:`Preprocess`.

A trained model is only usable with the preprocessing it was evaluated with, so this one object
travels everywhere the model goes: in checkpoints (``"preprocess"``), in exported artefacts (inside
:class:`resnetlab.deploy.ModelMeta`), in evaluation and in the Predictor. It replaces four ad-hoc
shapes (a dict in the checkpoint, fields of ``ModelMeta``, of the data bundle and of the training
config) with one frozen dataclass that validates itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from torch import Tensor

from .augment import MEAN_STD, BatchAugment, folder_transform

__all__ = ["Preprocess", "PRESETS", "parse_window"]

PRESETS = ("cifar", "imagenet")


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the network's input at evaluation time.

    "imagenet": resize the short side to ``image_size / 0.875``, centre-crop ``image_size``
    (torchvision's recipe); "cifar": resize to ``image_size`` (small images are taken whole).
    Then scale to [0, 1] and normalise with ``mean``/``std`` (one value per input channel).
    """

    preset: str = "imagenet"  # "imagenet" (resize/0.875 + centre crop) or "cifar" (resize only)
    image_size: int = 224  # H = W of the network input
    mean: tuple[float, ...] = MEAN_STD["imagenet"][0]  # per channel, on [0, 1] pixels
    std: tuple[float, ...] = MEAN_STD["imagenet"][1]
    in_chans: int = 3  # 1 (grayscale) or 3 (RGB)
    window: tuple[float, float] | None = None  # DICOM VOI window (centre, width) replacing the files' own

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {PRESETS}, got {self.preset!r}")
        if not isinstance(self.image_size, int) or isinstance(self.image_size, bool) or self.image_size < 1:
            raise ValueError(f"image_size must be a positive int, got {self.image_size!r}")
        if self.in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 or 3, got {self.in_chans!r}")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if len(self.mean) != len(self.std) or len(self.mean) not in (1, 3, self.in_chans):
            raise ValueError(f"mean and std need 1 or {self.in_chans} values each, got mean={self.mean!r} "
                             f"std={self.std!r}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std!r}")
        if self.window is not None:
            object.__setattr__(self, "window", parse_window(self.window))

    @classmethod
    def for_data(cls, preset: str, image_size: int, in_chans: int = 3,
                 window: tuple[float, float] | None = None) -> Preprocess:
        """The preset's standard statistics (averaged to one value for grayscale data)."""
        if preset not in MEAN_STD:
            raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
        mean, std = MEAN_STD[preset]
        if in_chans == 1:
            mean, std = (sum(mean) / 3,), (sum(std) / 3,)
        return cls(preset, int(image_size), tuple(mean), tuple(std), in_chans, window)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["window"] = list(self.window) if self.window is not None else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "preprocess") -> Preprocess:
        """Read it back, naming ``where`` it came from when a key is missing or wrong."""
        try:
            return cls(preset=str(d["preset"]), image_size=int(d["image_size"]), mean=tuple(d["mean"]),
                       std=tuple(d["std"]), in_chans=int(d.get("in_chans", 3)), window=d.get("window"))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: not a preprocessing description ({type(e).__name__}: {e}); expected "
                             "keys preset, image_size, mean, std, in_chans") from None

    def image_transform(self) -> Callable[[Any], Tensor]:
        """PIL image of any size or mode -> normalised float (C, H, W) tensor."""
        return folder_transform(self.preset, train=False, image_size=self.image_size, mean=self.mean,
                                std=self.std, in_chans=self.in_chans)

    def batch_transform(self) -> BatchAugment:
        """uint8 (N, H, W, C) batch of an in-memory data set -> normalised float (N, C, H, W) batch."""
        return BatchAugment(train=False, mean=self.mean, std=self.std, image_size=self.image_size)

    def describe(self) -> str:
        window = f", DICOM window {self.window[0]:g}/{self.window[1]:g}" if self.window else ""
        return f"{self.preset} {self.in_chans}x{self.image_size}x{self.image_size}{window}"


def parse_window(value: Any) -> tuple[float, float] | None:
    """A DICOM VOI window as (centre, width) from "40,400", [40, 400] or None; width must be >= 1."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    parts = value.replace(" ", "").split(",") if isinstance(value, str) else list(value)
    try:
        centre, width = (float(v) for v in parts)
    except (TypeError, ValueError):
        raise ValueError(f"window must be centre,width (e.g. 40,400 for soft tissue), got {value!r}") from None
    if not width >= 1 or centre != centre:
        raise ValueError(f"window width must be >= 1 (DICOM PS3.3 C.11.2.1.2), got centre {centre}, width {width}")
    return centre, width


