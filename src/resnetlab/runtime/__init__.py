"""A torch-free runtime for exported artefacts: ONNX (ONNX Runtime) and OpenVINO IR, with the preprocessing,
softmax / sigmoid, top-k, the stored decision thresholds and bulk folder prediction of :class:`resnetlab.Predictor`
— without importing torch, so a process that serves a ResNet-18 artefact stays small (see
``benchmarks/results/runtime_rss.md``). Needs numpy, Pillow and one of onnxruntime / openvino:

    pip install --no-deps resnetlab && pip install numpy pillow onnxruntime     # or openvino
    python -m resnetlab.runtime model.onnx cat.jpg dog.png --topk 3

    >>> from resnetlab.runtime import LitePredictor
    >>> LitePredictor("model.onnx").predict(["cat.jpg"], topk=3)            # doctest: +SKIP

The preprocessing is the checkpoint's own, carried in the artefact, computed with PIL and numpy exactly as the
torch path computes it (torchvision's Resize on PIL images is PIL's bilinear resize; the centre crop rounds as
torchvision's does); a test holds the two paths to the same probabilities. DICOM files need the torch path.
"""

from .predictor import LiteMeta, LitePredictor, LitePreprocess, predict_folder

__all__ = ["LitePredictor", "LiteMeta", "LitePreprocess", "predict_folder"]
