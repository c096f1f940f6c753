"""Knowledge distillation in the one training engine: the teacher's signal is what the student learns."""

import pytest
import torch
import torch.nn.functional as F

from resnetlab.eval import eval_batches, load_trained, open_split
from resnetlab.train.checkpoint import load_checkpoint
from resnetlab.train.config import from_dict, to_dict
from resnetlab.train.distill import kd_loss
from resnetlab.train.engine import Trainer, TrainingDiverged, fit
from train_helpers import interrupted_at, tiny_config, write_tree


def test_kd_loss_is_hintons_t_squared_kl():
    s, t = torch.randn(6, 5), torch.randn(6, 5)
    T = 3.0
    p = F.softmax(t / T, 1)
    manual = (p * (p.log() - F.log_softmax(s / T, 1))).sum(1).mean() * T * T
    torch.testing.assert_close(kd_loss(s, t, T), manual)
    assert float(kd_loss(t, t, T)) == pytest.approx(0.0, abs=1e-6)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """A tiny teacher trained on the colours, and its twin whose head is rotated (it calls blue green...)."""
    root = tmp_path_factory.mktemp("distill")
    tree = write_tree(root / "colours", train=24, test=8, val=4)
    fit(tiny_config(tree, root / "teacher", epochs=4))
    ck = torch.load(root / "teacher" / "best.pt", weights_only=True)
    for key in ("fc.weight", "fc.bias"):
        ck["model"][key] = ck["model"][key].roll(1, 0)
    torch.save(ck, root / "rotated.pt")
    return tree, root / "teacher", root / "rotated.pt"


def _predict(run) -> tuple[torch.Tensor, torch.Tensor]:
    trained = load_trained(run)
    batches = eval_batches(open_split(trained, None, "test"), trained.preprocess, batch_size=64)
    preds, targets = [], []
    with torch.no_grad():
        for x, y, *_ in batches.epoch(0):
            preds.append(trained.model(x).argmax(1))
            targets.append(y)
    return torch.cat(preds), torch.cat(targets)


def _agreement(run, teacher) -> tuple[float, float]:
    """(top-1 on the true labels, agreement with the teacher's predictions) on the test split."""
    p, y = _predict(run)
    t, _ = _predict(teacher)
    return float((p == y).float().mean()), float((p == t).float().mean())


def test_the_student_follows_the_teacher_not_only_the_labels(teachers, tmp_path):
    """With alpha=1 the student learns from a rotated teacher alone and predicts as it does, against the labels;
    with alpha=0 the same run learns the labels."""
    tree, good, rotated = teachers
    fit(tiny_config(tree, tmp_path / "follow", epochs=4, distill_from=str(rotated), distill_alpha=1.0,
                    distill_temperature=2.0))
    fit(tiny_config(tree, tmp_path / "labels", epochs=4, distill_from=str(rotated), distill_alpha=0.0))
    # last.pt: best.pt is selected on the true labels, which the follower is taught to contradict
    top1_f, agree_f = _agreement(tmp_path / "follow" / "last.pt", rotated)
    top1_l, agree_l = _agreement(tmp_path / "labels" / "last.pt", rotated)
    assert agree_f >= 0.75 and top1_f <= 0.35, (top1_f, agree_f)
    assert top1_l >= 0.75 and agree_l <= 0.35, (top1_l, agree_l)
    ck = load_checkpoint(tmp_path / "follow" / "last.pt")
    assert ck["distill"]["sha256"] and ck["distill"]["alpha"] == 1.0 and ck["config"]["distill_from"] == str(rotated)


def test_the_teacher_is_frozen_and_runs_in_the_students_bf16(teachers, tmp_path):
    tree, good, _ = teachers
    trainer = Trainer(tiny_config(tree, tmp_path / "bf16", epochs=1, amp="bf16", distill_from=str(good)))
    teacher = trainer.distiller.teacher
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    seen = []
    teacher.register_forward_hook(lambda m, i, out: seen.append((m.training, out.dtype)))
    trainer.fit()
    assert seen and all(mode is False and dtype == torch.bfloat16 for mode, dtype in seen)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # BN statistics untouched
    assert all(not p.requires_grad for p in teacher.parameters())


def test_a_distilled_run_resumes_exactly_and_refuses_another_teacher(teachers, tmp_path):
    tree, good, rotated = teachers
    common = dict(epochs=2, ckpt_every_steps=1, distill_from=str(rotated), distill_alpha=0.7)
    fit(tiny_config(tree, tmp_path / "ref", **common))
    with interrupted_at(5, "kl_div"), pytest.raises(TrainingDiverged, match="interrupted"):
        fit(tiny_config(tree, tmp_path / "run", **common))
    assert load_checkpoint(tmp_path / "run" / "last.pt")["global_step"] == 4
    fit(resume=tmp_path / "run")
    ref, res = load_checkpoint(tmp_path / "ref" / "last.pt"), load_checkpoint(tmp_path / "run" / "last.pt")
    assert res["global_step"] == ref["global_step"]
    for key, value in ref["model"].items():
        assert torch.equal(value, res["model"][key]), key
    # the teacher file changed under a run: resuming it is refused, naming the file
    other = tmp_path / "rotated.pt"
    ck = torch.load(rotated, weights_only=True)
    torch.save(ck, other)
    fit(tiny_config(tree, tmp_path / "third", epochs=1, distill_from=str(other)))
    ck["model"]["fc.bias"] = ck["model"]["fc.bias"] + 1
    torch.save(ck, other)
    with pytest.raises(ValueError, match="is not the teacher this run started with"):
        fit(tiny_config(tree, tmp_path / "third", epochs=2), resume=tmp_path / "third")


def test_a_teacher_with_other_classes_is_refused(teachers, tmp_path):
    tree, good, _ = teachers
    ck = torch.load(good / "best.pt", weights_only=True)
    ck["classes"] = ["cat", "dog", "fish"]
    torch.save(ck, tmp_path / "animals.pt")
    with pytest.raises(ValueError, match=r"teacher was trained for classes \['cat', 'dog', 'fish'\], the data has"):
        Trainer(tiny_config(tree, tmp_path / "x", distill_from=str(tmp_path / "animals.pt")))
    with pytest.raises(ValueError, match="distill_alpha must be in"):
        from_dict(to_dict(tiny_config(tree, tmp_path / "y", distill_alpha=1.5)))
