"""Classification metrics from logits, and the confusion matrix as CSV and PNG.

Everything is computed in float64 on the CPU from one ``(N, C)`` logits tensor and its ``(N,)``
targets, so the numbers do not depend on the device or the batch size they were produced with.
The returned dict holds only Python scalars, lists and dicts: it goes straight into ``json.dump``.

No scikit-learn and no matplotlib: ROC AUC is the Mann-Whitney rank statistic and the heat-map
is drawn with Pillow.
"""

from __future__ import annotations

import csv
import io
import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "classification_metrics", "binary_auc", "expected_calibration_error",
    "save_confusion_matrix", "format_metrics",
]


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------

def _check_inputs(logits: Tensor, targets: Tensor) -> None:
    """Refuse inputs the metrics would silently get wrong, repeating what was passed."""
    if not isinstance(logits, Tensor) or not isinstance(targets, Tensor):
        raise TypeError(
            f"logits and targets must be torch.Tensors, got {type(logits).__name__} and {type(targets).__name__}"
        )
    if logits.dim() != 2:
        raise ValueError(f"logits must be 2-D (N, C), got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, got dtype {logits.dtype}")
    if targets.dim() != 1:
        raise ValueError(f"targets must be 1-D (N,) class indices, got shape {tuple(targets.shape)}")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise ValueError(f"targets must be integer class indices (int64), got dtype {targets.dtype}")
    n, c = logits.shape
    if targets.shape[0] != n:
        raise ValueError(
            f"logits and targets disagree on N: logits {tuple(logits.shape)}, targets {tuple(targets.shape)}"
        )
    if n == 0:
        raise ValueError("no samples: logits has shape (0, C); evaluate at least one sample")
    if c < 2:
        raise ValueError(f"need at least 2 classes, got logits of shape {tuple(logits.shape)}")
    bad = (targets < 0) | (targets >= c)
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"targets must lie in 0..{c - 1} (C={c}); {int(bad.sum())} do not, e.g. targets[{i}] = {int(targets[i])}"
        )
    finite = torch.isfinite(logits)
    if not finite.all():
        i, j = (int(v) for v in (~finite).nonzero()[0])
        raise ValueError(
            f"logits must be finite; {int((~finite).sum())} entries are not, "
            f"e.g. logits[{i}, {j}] = {float(logits[i, j])}"
        )


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, tied values sharing the mean of the ranks they span."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2.0)[inverse.reshape(-1)]


def binary_auc(scores: Tensor | np.ndarray, labels: Tensor | np.ndarray) -> float | None:
    """ROC AUC of ``scores`` for the positives in ``labels`` (bool or 0/1); None if one side is empty.

    The Mann-Whitney U statistic divided by ``n_pos * n_neg`` (Hanley & McNeil 1982): the chance
    that a random positive outscores a random negative, ties counting one half (average ranks).
    """
    s = np.asarray(scores.detach().cpu() if isinstance(scores, Tensor) else scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels.detach().cpu() if isinstance(labels, Tensor) else labels).reshape(-1).astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"scores and labels must have the same length, got {s.shape[0]} and {y.shape[0]}")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    rank_sum = float(_average_ranks(s)[y].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def expected_calibration_error(probs: Tensor, targets: Tensor, bins: int = 15) -> tuple[float, list[dict]]:
    """ECE over ``bins`` equal-width confidence bins (Guo et al. 2017, "On Calibration of Modern NNs").

    Confidence is the top softmax probability; bin m holds confidences in ((m-1)/M, m/M]. ECE is
    sum_m |B_m|/N * |acc(B_m) - conf(B_m)|. Also returns the per-bin table (a reliability diagram).
    """
    if not isinstance(bins, int) or isinstance(bins, bool) or bins < 1:
        raise ValueError(f"ece_bins must be a positive int, got {bins!r}")
    conf, pred = probs.max(dim=1)
    correct = (pred == targets).double()
    idx = (torch.ceil(conf * bins).long() - 1).clamp_(0, bins - 1)
    count = torch.bincount(idx, minlength=bins).double()
    acc_sum = torch.bincount(idx, weights=correct, minlength=bins)
    conf_sum = torch.bincount(idx, weights=conf.double(), minlength=bins)
    ece = float((acc_sum - conf_sum).abs().sum() / probs.shape[0])
    table = []
    for m in range(bins):
        k = int(count[m])
        table.append({
            "lower": m / bins, "upper": (m + 1) / bins, "count": k,
            "accuracy": float(acc_sum[m] / k) if k else None,
            "confidence": float(conf_sum[m] / k) if k else None,
        })
    return ece, table


def _resolve_names(class_names: Sequence[str] | None, c: int) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(c)]
    names = [str(n) for n in class_names]
    if len(names) != c:
        raise ValueError(f"class_names has {len(names)} names but logits have C={c} classes")
    if len(set(names)) != c:
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"class_names must be unique, got duplicates {dup}")
    return names


def classification_metrics(logits: Tensor, targets: Tensor, *, class_names: Sequence[str] | None = None,
                           ece_bins: int = 15) -> dict:
    """Top-1/top-5 accuracy, NLL, ECE, one-vs-rest ROC AUC, per-class accuracy and confusion matrix.

    ``top5`` is top-min(5, C) (named in ``top5_k``). ``auc`` is the macro mean of the per-class
    one-vs-rest AUCs of the softmax probabilities over the classes that have both positives and
    negatives (sklearn's ``multi_class="ovr", average="macro"``); for C == 2 it is the AUC of class 1.
    ``per_class_accuracy`` is the recall of each class (None for a class without samples).
    """
    _check_inputs(logits, targets)
    logits = logits.detach().to("cpu", torch.float64)
    targets = targets.detach().to("cpu", torch.int64)
    n, c = logits.shape
    names = _resolve_names(class_names, c)

    probs = logits.softmax(dim=1)
    pred = logits.argmax(dim=1)
    k = min(5, c)
    topk_hit = (logits.topk(k, dim=1).indices == targets[:, None]).any(dim=1)
    cm = torch.bincount(targets * c + pred, minlength=c * c).reshape(c, c)
    support = cm.sum(dim=1)
    ece, calibration = expected_calibration_error(probs, targets, ece_bins)

    if c == 2:
        class_auc: list[float | None] = [binary_auc(probs[:, 1], targets == 1)] * 2
        auc = class_auc[1]
    else:
        columns = probs.T.contiguous().numpy()  # one contiguous row per class: fast ranking
        class_auc = [binary_auc(columns[j], (targets == j).numpy()) for j in range(c)]
        defined = [a for a in class_auc if a is not None]
        auc = float(np.mean(defined)) if defined else None
    return {
        "num_samples": n,
        "num_classes": c,
        "top1": float((pred == targets).double().mean()),
        "top5": float(topk_hit.double().mean()),
        "top5_k": k,
        "nll": float(F.cross_entropy(logits, targets)),
        "ece": ece,
        "ece_bins": ece_bins,
        "auc": auc,
        "auc_per_class": dict(zip(names, class_auc)),
        "class_names": names,
        "per_class_accuracy": {
            name: (float(cm[i, i] / support[i]) if support[i] else None) for i, name in enumerate(names)
        },
        "per_class_support": dict(zip(names, support.tolist())),
        "confusion_matrix": cm.tolist(),
        "calibration": calibration,
    }


def format_metrics(metrics: dict) -> str:
    """A few lines for a terminal or a log: accuracy, NLL, ECE, AUC, N and the three worst classes."""
    def num(key: str, fmt: str, scale: float = 1.0) -> str:
        v = metrics.get(key)
        return "n/a" if v is None else format(v * scale, fmt)

    k = metrics.get("top5_k", 5)
    lines = [
        f"samples {metrics.get('num_samples', '?')}  classes {metrics.get('num_classes', '?')}",
        f"top-1 {num('top1', '.2f', 100)} %  top-{k} {num('top5', '.2f', 100)} %",
        f"nll {num('nll', '.4f')}  ece {num('ece', '.4f')}  auc {num('auc', '.4f')}",
    ]
    per_class = {name: acc for name, acc in (metrics.get("per_class_accuracy") or {}).items() if acc is not None}
    if per_class:
        worst = sorted(per_class.items(), key=lambda kv: kv[1])[:3]
        lines.append("worst classes: " + ", ".join(f"{name} {acc * 100:.1f} %" for name, acc in worst))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# confusion matrix files
# --------------------------------------------------------------------------------------------

def _atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp)`` on a temp file next to ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # umask applies, unlike mkstemp
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _check_cm(cm: Sequence[Sequence[int]] | np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    try:
        arr = np.asarray(cm, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"confusion matrix must be a square matrix of counts ({e})") from None
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"confusion matrix must be square (C, C), got shape {arr.shape}")
    if not np.isfinite(arr).all() or (arr < 0).any() or (arr != np.round(arr)).any():
        raise ValueError("confusion matrix must hold non-negative integer counts")
    if len(class_names) != arr.shape[0]:
        raise ValueError(f"got {len(class_names)} class names for a {arr.shape[0]}x{arr.shape[1]} confusion matrix")
    return arr.astype(np.int64)


def save_confusion_matrix(cm: Sequence[Sequence[int]] | np.ndarray, class_names: Sequence[str],
                          csv_path: str | os.PathLike, png_path: str | os.PathLike | None = None) -> None:
    """Write the confusion matrix (rows = true class, columns = predicted) as CSV and optionally PNG.

    The CSV's header row names the predicted classes and its first column the true ones. The PNG
    is a row-normalised heat-map drawn with Pillow. Both files are written atomically.
    """
    arr = _check_cm(cm, class_names)
    names = [str(n) for n in class_names]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["true \\ predicted", *names])
    for name, row in zip(names, arr.tolist()):
        w.writerow([name, *row])

    def write_csv(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(buf.getvalue())

    _atomic_write(csv_path, write_csv)
    if png_path is not None:
        image = _draw_confusion_matrix(arr, names)
        _atomic_write(png_path, lambda tmp: image.save(tmp, format="PNG"))


# --------------------------------------------------------------------------------------------
# heat-map drawing (Pillow only)
# --------------------------------------------------------------------------------------------

# matplotlib's "Blues" colour map, sampled: white (0) to dark blue (1).
_BLUES = [(247, 251, 255), (222, 235, 247), (198, 219, 239), (158, 202, 225), (107, 174, 214),
          (66, 146, 198), (33, 113, 181), (8, 81, 156), (8, 48, 107)]


def _colour(v: float) -> tuple[int, int, int]:
    x = min(max(v, 0.0), 1.0) * (len(_BLUES) - 1)
    i = min(int(x), len(_BLUES) - 2)
    t = x - i
    return tuple(round(a + (b - a) * t) for a, b in zip(_BLUES[i], _BLUES[i + 1]))  # type: ignore[return-value]


def _font(size: int):
    from PIL import ImageFont

    for name in ("DejaVuSans.ttf", "Arial.ttf", "LiberationSans-Regular.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType
    except TypeError:
        return ImageFont.load_default()


def _text_size(font, text: str) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text)
    return right - left, bottom - top


def _vertical_text(text: str, font, fill=(0, 0, 0)):
    """``text`` rotated to read bottom to top, on a transparent image."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = font.getbbox(text)
    img = Image.new("RGBA", (right - left + 2, bottom - top + 2), (255, 255, 255, 0))
    ImageDraw.Draw(img).text((-left + 1, -top + 1), text, font=font, fill=fill)
    return img.rotate(90, expand=True)


def _draw_confusion_matrix(cm: np.ndarray, names: list[str]):
    """Heat-map of ``cm`` coloured by row fraction, counts in the cells when they fit."""
    from PIL import Image, ImageDraw

    c = cm.shape[0]
    cell = max(12, min(110, 600 // c))  # 2 classes: 110 px cells; 10: 60 px; 100: 12 px
    label_font, title_font = _font(max(9, min(15, cell - 2))), _font(18)
    count_font = _font(max(9, min(18, cell // 4 + 2)))
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    counts = [str(v) for v in cm.reshape(-1)]
    show_counts = cell >= 24 and max(_text_size(count_font, s)[0] for s in counts) <= cell - 4

    pad, grid = 14, cell * c
    ylab_w = max(_text_size(label_font, n)[0] for n in names)
    x_rotated = max(_text_size(label_font, n)[0] for n in names) > cell - 4
    xlab_h = (max(_text_size(label_font, n)[0] for n in names) if x_rotated
              else max(_text_size(label_font, n)[1] for n in names)) + 6
    title = f"Confusion matrix  (N={int(cm.sum())}, colour = fraction of the true class)"
    title_w, title_h = _text_size(title_font, title)
    axis_h = _text_size(title_font, "predicted")[1]
    x0 = pad + axis_h + 8 + ylab_w + 6  # left edge of the grid
    y0 = pad + title_h + 12
    bar_x = x0 + grid + 16
    width = max(bar_x + 14 + 48, pad + title_w + pad)
    height = y0 + grid + 6 + xlab_h + 8 + axis_h + pad

    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((pad, pad), title, font=title_font, fill=(0, 0, 0))
    for i in range(c):
        for j in range(c):
            box = (x0 + j * cell, y0 + i * cell, x0 + (j + 1) * cell - 1, y0 + (i + 1) * cell - 1)
            draw.rectangle(box, fill=_colour(frac[i, j]) if rows[i, 0] else (235, 235, 235))
            if show_counts:
                ink = (255, 255, 255) if frac[i, j] > 0.55 else (30, 30, 30)
                draw.text((box[0] + cell / 2, box[1] + cell / 2), counts[i * c + j], font=count_font, fill=ink,
                          anchor="mm")
    draw.rectangle((x0 - 1, y0 - 1, x0 + grid, y0 + grid), outline=(90, 90, 90))
    _draw_labels(img, draw, names, label_font, x0, y0, cell, x_rotated)
    _draw_axis_titles(img, draw, title_font, x0, y0, grid, xlab_h, pad)
    _draw_colour_bar(draw, label_font, bar_x, y0, grid)
    return img


def _draw_labels(img, draw, names: list[str], font, x0: int, y0: int, cell: int, x_rotated: bool) -> None:
    grid = cell * len(names)
    for i, name in enumerate(names):
        draw.text((x0 - 6, y0 + i * cell + cell / 2), name, font=font, fill=(0, 0, 0), anchor="rm")
        if x_rotated:
            label = _vertical_text(name, font)
            img.paste(label, (x0 + i * cell + (cell - label.width) // 2, y0 + grid + 6), label)
        else:
            draw.text((x0 + i * cell + cell / 2, y0 + grid + 6), name, font=font, fill=(0, 0, 0), anchor="mt")


def _draw_axis_titles(img, draw, font, x0: int, y0: int, grid: int, xlab_h: int, pad: int) -> None:
    tw, _ = _text_size(font, "predicted")
    draw.text((x0 + (grid - tw) / 2, y0 + grid + 6 + xlab_h + 8), "predicted", font=font, fill=(0, 0, 0),
              anchor="lt")
    label = _vertical_text("true", font)
    img.paste(label, (pad, y0 + (grid - label.height) // 2), label)


def _draw_colour_bar(draw, font, x: int, y0: int, grid: int) -> None:
    for k in range(grid):
        draw.line((x, y0 + k, x + 12, y0 + k), fill=_colour(1.0 - k / max(grid - 1, 1)))
    draw.rectangle((x, y0, x + 12, y0 + grid - 1), outline=(90, 90, 90))
    for v in (0.0, 0.5, 1.0):
        s = f"{v:.0%}"
        _, th = _text_size(font, s)
        y = y0 + (1.0 - v) * (grid - 1) - th / 2
        y = min(max(y, y0), y0 + grid - th)
        draw.text((x + 16, y), s, font=font, fill=(0, 0, 0), anchor="lt")
