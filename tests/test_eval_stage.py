"""The evaluation stage on its own: Preprocess, loading a checkpoint, eval batches, evaluate()."""

import json

import numpy as np
import pytest
import torch

import resnetlab
from resnetlab import Preprocess
from resnetlab.eval import EvalResult, binary_auc, classification_metrics, evaluate, load_trained, topk_accuracy
from train_helpers import tiny_config, write_tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("eval") / "colours")


@pytest.fixture(scope="module")
def trained_run(tree):
    run = tree.parent / "run"
    resnetlab.fit(tiny_config(tree, run, epochs=2, lr=0.1))
    return run


def test_preprocess_round_trips_and_refuses_bad_values():
    p = Preprocess.for_data("cifar", 32, in_chans=1)
    assert p.mean == pytest.approx(((0.4914 + 0.4822 + 0.4465) / 3,)) and p.in_chans == 1
    assert Preprocess.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    with pytest.raises(ValueError, match="preset must be one of"):
        Preprocess(preset="mnist")
    with pytest.raises(ValueError, match="in_chans must be 1 or 3, got 2"):
        Preprocess(in_chans=2)
    with pytest.raises(ValueError, match="std must be positive"):
        Preprocess(std=(0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match="ckpt.pt: not a preprocessing description"):
        Preprocess.from_dict({"preset": "cifar"}, "ckpt.pt")


def test_both_preprocess_paths_give_the_same_input():
    """A small image through the PIL path (Predictor) and the uint8-array path (evaluation) is the same."""
    pre = Preprocess.for_data("cifar", 16)
    img = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    from PIL import Image

    a = pre.image_transform()(Image.fromarray(img))
    b = pre.batch_transform()(torch.from_numpy(img)[None])[0]
    assert torch.allclose(a, b, atol=1e-6)


def test_topk_is_the_one_definition():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]])
    targets = torch.tensor([1, 2, 0])
    assert topk_accuracy(logits, targets, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(logits, targets, 2) == pytest.approx(1 / 3)  # sample 2's target 0 is last
    assert topk_accuracy(logits, targets, 3) == 1.0
    m = classification_metrics(logits, targets)
    assert (m["top1"], m["top5"], m["top5_k"]) == (topk_accuracy(logits, targets, 1), 1.0, 3)


def test_auc_matches_scikit_learn():
    import sklearn.metrics as sklearn
    rng = np.random.default_rng(1)
    scores, labels = rng.normal(size=300).round(1), rng.integers(0, 2, 300)  # rounding makes ties
    assert binary_auc(scores, labels) == pytest.approx(sklearn.roc_auc_score(labels, scores), abs=1e-12)
    logits = torch.from_numpy(rng.normal(size=(200, 4)))
    targets = torch.from_numpy(rng.integers(0, 4, 200))
    probs = logits.softmax(1).numpy()
    ours = classification_metrics(logits, targets)["auc"]
    assert ours == pytest.approx(sklearn.roc_auc_score(targets.numpy(), probs, multi_class="ovr"), abs=1e-9)


def test_evaluate_a_trained_run(trained_run, tree, tmp_path):
    result = resnetlab.evaluate(trained_run, tree, split="test", out=tmp_path / "ev")
    assert isinstance(result, EvalResult) and result.num_samples == result.metrics["num_samples"]
    cm = np.array(result.metrics["confusion_matrix"])
    assert result.top1 == pytest.approx(np.trace(cm) / cm.sum())
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["top1"] == result.top1 and saved["split"] == "test"
    assert (tmp_path / "ev" / "confusion_matrix.png").stat().st_size > 1000
    # the same numbers by hand: the model on every test image, preprocessed as its checkpoint says
    trained = load_trained(trained_run)
    from resnetlab.data import open_dataset

    ds = open_dataset(tree, "test", cache_dir=tmp_path / "c")
    x = trained.preprocess.batch_transform()(torch.from_numpy(np.array(ds.images)))
    with torch.no_grad():
        pred = trained.model(x).argmax(1).numpy()
    assert result.top1 == pytest.approx(float((pred == ds.targets).mean()))


def test_evaluate_refuses_data_with_other_classes(trained_run, tmp_path):
    other = write_tree(tmp_path / "other", train=2, test=2)
    (other / "test" / "red").rename(other / "test" / "yellow")
    (other / "train" / "red").rename(other / "train" / "yellow")
    with pytest.raises(ValueError, match="predicts"):
        evaluate(trained_run, other, split="test")
