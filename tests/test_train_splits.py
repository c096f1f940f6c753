"""Model selection on the validation split, never on test; test evaluated once, on best.pt; data set-up
under DDP (rank 0 prepares the data first)."""

import json

import pytest

from resnetlab.eval import evaluate
from resnetlab.train import loaders
from resnetlab.train.config import from_dict, load_config, recipe_path, to_dict
from resnetlab.train.distributed import DistInfo
from resnetlab.train.engine import fit
from train_helpers import tiny_config, write_tree


def test_without_a_val_split_a_seeded_part_of_train_selects_best_and_test_is_evaluated_once(tmp_path):
    tree = write_tree(tmp_path / "colours")  # train/ and test/ only
    run = tmp_path / "run"
    result = fit(tiny_config(tree, run, epochs=3, lr=0.1))
    s = result.summary
    assert (result.num_train, result.num_eval, s["num_test"]) == (42, 6, 12)  # 2 of each class's 16 held out
    assert s["best_val_top1"] == max(r["val_top1"] for r in result.history)
    assert "validation split (6 images: 0.1 of the training data" in s["selection"]
    assert "best.pt evaluated once on the test split (12 images)" in s["selection"]
    saved = load_config(run / "config.yaml")
    assert saved.val_split == 0.1 and saved.data == str(tree)  # so eval finds the same held-out part
    # the numbers can be had again from best.pt: val (the held-out part of train/) and test (test/)
    best_epoch = max(result.history, key=lambda r: r["val_top1"])
    assert evaluate(run, split="val").metrics["nll"] == pytest.approx(best_epoch["val_loss"], rel=1e-6)
    test = evaluate(run, split="test")
    assert (test.top1, test.top5, test.num_samples) == (s["test_top1"], s["test_top5"], 12)
    assert json.loads((run / "summary.json").read_text())["test_top1"] == s["test_top1"]


def test_the_data_s_own_val_split_is_used_and_val_split_carves_anyway(tmp_path):
    tree = write_tree(tmp_path / "colours", val=2)
    own = fit(tiny_config(tree, tmp_path / "own", epochs=1))
    assert (own.num_train, own.num_eval) == (48, 6) and "the data's own val split" in own["selection"]
    carved = fit(tiny_config(tree, tmp_path / "carved", epochs=1, val_split=0.25))
    assert (carved.num_train, carved.num_eval) == (36, 12)


def test_no_test_split_no_test_numbers(tmp_path):
    tree = write_tree(tmp_path / "colours", test=0, val=2)
    result = fit(tiny_config(tree, tmp_path / "run", epochs=1))
    assert result["test_top1"] is None and result["num_test"] == 0
    assert "no test split" in result["selection"]


def test_recipes_no_longer_select_on_test_and_old_configs_still_load():
    for name in ("cifar10-resnet18", "cifar10-resnet18-fast", "cifar10-resnet20", "imagenet-resnet18"):
        assert "eval_split" not in recipe_path(name).read_text(), name
    with pytest.warns(FutureWarning, match="eval_split is no longer a setting"):
        cfg = from_dict({"model": "resnet20", "eval_split": "test"})
    assert cfg.model == "resnet20" and "eval_split" not in to_dict(cfg)


@pytest.mark.parametrize("rank", [0, 1])
def test_rank_0_prepares_the_data_while_the_others_wait(tmp_path, monkeypatch, rank):
    """--download (and unpacking an archive) happen on rank 0 only; the other ranks look only after the
    barrier, when the data is there, and never download."""
    tree = write_tree(tmp_path / "colours", val=2)
    calls, real = [], loaders.resolve_data_root

    def resolve(data, *, download=False, cache_dir=None):
        calls.append(f"resolve(download={download})")
        return real(data, download=False, cache_dir=cache_dir)

    monkeypatch.setattr(loaders, "resolve_data_root", resolve)
    import resnetlab.train.distributed as distributed

    monkeypatch.setattr(distributed, "barrier", lambda info: calls.append("barrier"))  # what main_first waits at
    bundle = loaders.build_data(tiny_config(tree, tmp_path / "run", download=True), DistInfo(rank, 2, rank))
    if rank == 0:
        assert calls == ["resolve(download=True)", "barrier", "barrier"]
    else:
        assert calls == ["barrier", "resolve(download=False)", "barrier"]
    assert len(bundle.train) == 48 and bundle.root == str(tree)


@pytest.mark.parametrize("kind", ["folder", "arrays"])
def test_shuffle_labels_permutes_train_and_val_labels_and_leaves_test_alone(tmp_path, kind):
    from collections import Counter

    from train_helpers import write_prevalence_shift

    data = write_tree(tmp_path / "d") if kind == "folder" else write_prevalence_shift(tmp_path / "d.npz")
    plain, shuffled = (loaders.build_data(tiny_config(data, tmp_path / "r", shuffle_labels=s, cache_dir=str(
        tmp_path / "c")), DistInfo()) for s in (False, True))
    for split in ("train", "val"):
        a, b = (list(getattr(d, split).targets) for d in (plain, shuffled))
        assert Counter(a) == Counter(b) and len(a) == len(b)  # the same labels, dealt to other images
        moved = sum(x != y for x, y in zip(a, b)) / len(a)
        expected = 1 - sum((c / len(a)) ** 2 for c in Counter(a).values())  # of a random permutation
        assert expected / 2 < moved < 1.5 * expected, (split, moved, expected)
    assert list(plain.test.targets) == list(shuffled.test.targets)
    assert (plain.train.images == shuffled.train.images).all()  # the images stay where they were
    assert to_dict(from_dict({**to_dict(tiny_config(data, tmp_path / "r")), "shuffle_labels": True}))[
        "shuffle_labels"] is True


def test_permute_labels_on_files_keeps_each_path_and_deals_out_the_same_labels():
    from resnetlab.data import FolderDataset

    samples = [(f"{i}.png", i % 3) for i in range(30)]
    ds = loaders.permute_labels(FolderDataset(samples, ["a", "b", "c"]), seed=1)
    assert [p for p, _ in ds.samples] == [p for p, _ in samples]
    assert sorted(ds.targets) == sorted(t for _, t in samples) and ds.targets != [t for _, t in samples]
