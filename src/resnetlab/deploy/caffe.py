"""``from_caffe(prototxt, caffemodel)``: a Caffe model as a PyTorch model, without Caffe.

The prototxt gives the graph, the caffemodel the blobs (matched by layer name, every shape checked). The
result runs RGB input normalised as resnetlab's :class:`Preprocess` says — ``mean`` / 255 and ``std`` 1 / 255
reproduce Caffe's 0–255, mean-subtracted input — and flips to Caffe's BGR inside the network.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch.nn as nn

from ..data.preprocess import Preprocess
from ..utils.download import file_digest
from ..models.caffe import CaffeFormatError, CaffeGraphError, CaffeNet, PrototxtError, read_caffemodel, read_prototxt

__all__ = ["CaffeConversion", "from_caffe", "save_caffe_net", "load_caffe_net", "CAFFE_MEAN_BGR",
           "CaffeFormatError", "CaffeGraphError", "PrototxtError"]

CAFFE_MEAN_BGR = (104.0, 117.0, 123.0)  # the ImageNet mean of Caffe's ResNet / VGG deploy files, BGR order
META_KEY = "resnetlab.caffe"


@dataclass
class CaffeConversion:
    """The converted ``model`` (the ``graph_model`` itself, or a zoo model when ``zoo`` names one), how to feed
    it, and the facts of the conversion."""

    model: nn.Module
    preprocess: Preprocess
    classes: list[str]
    graph: dict[str, list]  # the prototxt, parsed
    graph_model: CaffeNet  # the layer graph as read, which a zoo model is checked against
    zoo: dict[str, Any] | None = None  # {"name": "resnet18", "kwargs": {...}}
    report: dict[str, Any] = field(default_factory=dict)


def caffe_preprocess(size: int, mean_bgr: Sequence[float], in_chans: int = 3) -> Preprocess:
    """Caffe's input convention as resnetlab preprocessing: pixels 0–255 minus the mean (given BGR, stored
    RGB since the converted model takes RGB)."""
    mean = tuple(float(m) / 255.0 for m in reversed(tuple(mean_bgr))) if in_chans == 3 else \
        (float(mean_bgr[0]) / 255.0,)
    return Preprocess(preset="imagenet", image_size=size, mean=mean, std=(1 / 255.0,) * len(mean), in_chans=in_chans)


def from_caffe(prototxt: str | os.PathLike, caffemodel: str | os.PathLike, *,
               mean_bgr: Sequence[float] = CAFFE_MEAN_BGR, classes: Sequence[str] | None = None,
               zoo: bool = True) -> CaffeConversion:
    """Read both files, build the graph, load the blobs; with ``zoo``, a ResNet the zoo has comes back as that
    zoo model (torchvision-compatible names), checked equal to the graph on a random input."""
    net = read_prototxt(str(prototxt))
    model = CaffeNet(net, bgr=True).eval()
    _, layers = read_caffemodel(str(caffemodel))
    model.load_caffe_blobs(layers, str(caffemodel))
    c, h, w = model.input_shape
    if h != w:
        raise CaffeGraphError(f"{prototxt}: input {h}x{w} is not square; resnetlab preprocessing crops squares")
    if c == 1:
        model.bgr = False
    n_out = model.output_shape[0]
    names = list(classes) if classes is not None else [str(i) for i in range(n_out)]
    if len(names) != n_out:
        raise ValueError(f"classes has {len(names)} names but the network predicts {n_out}")
    kinds: dict[str, int] = {}
    for *_, kind in model.steps:
        kinds[kind] = kinds.get(kind, 0) + 1
    report = {"prototxt": str(prototxt), "caffemodel": str(caffemodel), "caffemodel_sha256": file_digest(caffemodel),
              "layers": kinds, "params": sum(p.numel() for p in model.parameters()),
              "input": [c, h, w], "outputs": n_out, "dropped_final_softmax": model.ends_in_softmax,
              "mean_bgr": [float(m) for m in mean_bgr]}
    conv = CaffeConversion(model, caffe_preprocess(h, mean_bgr, c), names, net, model, None, report)
    if zoo:
        from ..models.caffe.zoo import to_zoo

        to_zoo(conv)
    return conv


def save_caffe_net(conv: CaffeConversion, path: str | os.PathLike) -> Path:
    """The graph model as safetensors, its prototxt graph, preprocessing and classes in the metadata."""
    from ..models.weights import save_weights

    meta = {META_KEY: json.dumps({"graph": conv.graph, "preprocess": conv.preprocess.to_dict(),
                                  "classes": conv.classes, "bgr": conv.graph_model.bgr})}
    return save_weights(conv.graph_model.state_dict(), path, metadata=meta)


def load_caffe_net(path: str | os.PathLike) -> tuple[CaffeNet, Preprocess, list[str]]:
    """A graph model saved by :func:`save_caffe_net`, rebuilt from its metadata (no code, no pickle)."""
    from safetensors import safe_open

    from ..models.weights import load_weights

    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata() or {}
    if META_KEY not in meta:
        raise ValueError(f"{path}: not a converted Caffe graph (no {META_KEY!r} metadata)")
    info = json.loads(meta[META_KEY])
    model = CaffeNet(info["graph"], bgr=bool(info["bgr"])).eval()
    load_weights(model, str(path))
    return model, Preprocess.from_dict(info["preprocess"], str(path)), list(info["classes"])


def save_conversion(conv: CaffeConversion, out: str | os.PathLike) -> dict[str, str]:
    """Write a conversion into ``out``: a zoo model as a resnetlab checkpoint (``model.pt``: eval, predict,
    export, serve take it) and safetensors weights (``model.safetensors``: ``train --pretrained``); always the
    graph (``graph.safetensors``) and ``conversion.json``. Each file is written atomically; nothing is pickled
    but plain tensors and strings (checkpoints load with ``weights_only=True``)."""
    import torch

    from ..eval.loading import FORMAT
    from ..models.weights import save_weights
    from ..utils.fileio import atomic_path, atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"graph": str(save_caffe_net(conv, out / "graph.safetensors"))}
    if conv.zoo is not None:
        state = {k: v.detach().cpu().contiguous() for k, v in conv.model.state_dict().items()}
        kwargs = {k: v for k, v in conv.zoo["kwargs"].items() if k != "num_classes"}
        ck = {"format": FORMAT, "model_name": conv.zoo["name"], "model_kwargs": kwargs,
              "num_classes": len(conv.classes), "in_chans": conv.preprocess.in_chans, "model": state,
              "classes": list(conv.classes), "preprocess": conv.preprocess.to_dict(),
              "config": {"imported_from": "caffe", "prototxt": conv.report["prototxt"],
                         "caffemodel": conv.report["caffemodel"],
                         "caffemodel_sha256": conv.report["caffemodel_sha256"]}}
        with atomic_path(out / "model.pt") as tmp:
            torch.save(ck, tmp)
        files["checkpoint"] = str(out / "model.pt")
        files["weights"] = str(save_weights(conv.model, out / "model.safetensors",
                                            metadata={"resnetlab.model_kwargs": json.dumps(kwargs)}))
    report = dict(conv.report, files=files, classes=len(conv.classes), preprocess=conv.preprocess.to_dict())
    atomic_write_text(out / "conversion.json", json.dumps(report, indent=2) + "\n")
    files["report"] = str(out / "conversion.json")
    return files


def check_conversion(conv: CaffeConversion, images: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """Run real images through the converted model and through the Caffe graph it came from: the top-5 of the
    model and the largest difference between the two (they must agree; a zoo model is rebuilt, not copied)."""
    import torch

    from ..data.folder import load_image

    graph = conv.graph_model
    transform, out = conv.preprocess.image_transform(), []
    mode = "L" if conv.preprocess.in_chans == 1 else "RGB"
    for path in images:
        try:
            x = transform(load_image(str(path), mode)).unsqueeze(0)
        except Exception as e:  # noqa: BLE001 - an unreadable image, named
            raise ValueError(f"--check {path}: cannot read the image ({type(e).__name__}: {e})") from None
        with torch.no_grad():
            got, want = conv.model.eval()(x), graph.eval()(x)
        probs = got.softmax(1)[0]
        top = probs.topk(min(5, len(probs)))
        out.append({"image": str(path), "top": [(conv.classes[i], float(p)) for p, i in zip(*top)],
                    "max_abs_diff": float((got - want).abs().max())})
    return out
