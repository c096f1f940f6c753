"""``precision="auto"``: bf16 where this CPU computes it natively (AVX512-BF16 or AMX), an int8 artefact as it is,
fp32 otherwise — and never silently lossy: when evaluation images are at hand (the run's validation split, or
``check_data``), bf16 is taken only if its top-1 agrees with fp32's on at least 99.5 % of them; the agreement and
the largest probability difference measured are kept in the choice (``Predictor.info``) and printed by the CLI.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from ..runtime.decisions import softmax
from ..utils.hardware import cpu_has_bf16

__all__ = ["PrecisionChoice", "choose_precision", "MIN_AGREEMENT", "CHECK_IMAGES"]

MIN_AGREEMENT = 0.995  # top-1 agreement with fp32 that bf16 must reach on the check images
CHECK_IMAGES = 500  # at most this many check images


@dataclass
class PrecisionChoice:
    precision: str
    how: str
    agreement: float | None = None  # top-1 agreement with fp32 on the check images
    max_prob_diff: float | None = None  # largest |p_bf16 - p_fp32| over them
    images: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        measured = (f"; top-1 agreement with fp32 {100 * self.agreement:.2f} % on {self.images} images, largest "
                    f"probability difference {self.max_prob_diff:.2g}" if self.agreement is not None else "")
        return f"precision {self.precision}: {self.how}{measured}"


def choose_precision(make: Callable[[str], Callable[[np.ndarray], np.ndarray]], check: np.ndarray | None, *,
                     where: str = "", native_bf16: bool | None = None) -> PrecisionChoice:
    """bf16 or fp32 for a model whose runtime ``make(precision)`` builds, checked on ``check`` images (N, C, H, W)
    when given. ``where`` names the check images in the explanation."""
    native = cpu_has_bf16() if native_bf16 is None else native_bf16
    if not native:
        return PrecisionChoice("fp32", "this CPU has no native bf16 (avx512_bf16 / AMX), where bf16 would be slower")
    if check is None or len(check) == 0:
        return PrecisionChoice("bf16", "native bf16 on this CPU; NOT checked against fp32: no evaluation images at "
                                       "hand (give check data to have it checked)")
    p32 = softmax(make("fp32")(check))
    p16 = softmax(make("bf16")(check))
    agree = float((p32.argmax(1) == p16.argmax(1)).mean())
    diff = float(np.abs(p32 - p16).max())
    if agree >= MIN_AGREEMENT:
        return PrecisionChoice("bf16", f"native bf16 on this CPU, checked on {where or 'the check images'}", agree,
                               diff, len(check))
    return PrecisionChoice("fp32", f"bf16's top-1 agreed with fp32 on less than {100 * MIN_AGREEMENT:.1f} % of "
                                   f"{where or 'the check images'}", agree, diff, len(check))
