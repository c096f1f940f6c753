"""Detectors and segmenters on resnetlab backbones: torchvision's heads, the zoo's trunks, their weights,
torchvision's freezing rule, and output stride 8/16/32 on a BasicBlock ResNet (which torchvision refuses)."""

import pytest
import torch

import resnetlab
from resnetlab.models.detection import create_detector
from resnetlab.models.segmentation import create_segmenter

TARGET = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 80.0]]), "labels": torch.tensor([1])}]


@pytest.mark.parametrize("name,losses", [
    ("fasterrcnn_resnet18_fpn", {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}),
    ("retinanet_resnet18_fpn", {"classification", "bbox_regression"}),
    ("fcos_resnet18_fpn", {"classification", "bbox_regression", "bbox_ctrness"}),
])
def test_detectors_train_and_predict_with_torchvisions_interface(name, losses):
    torch.manual_seed(0)
    model = create_detector(name, num_classes=3, min_size=96, max_size=96)
    model.train()
    loss = model([torch.rand(3, 96, 112)], TARGET)
    assert set(loss) == losses and all(torch.isfinite(v) for v in loss.values())
    sum(loss.values()).backward()
    assert model.backbone.body.layer4[1].conv2.weight.grad is not None
    model.eval()
    with torch.no_grad():
        (out,) = model([torch.rand(3, 96, 112)])
    assert set(out) == {"boxes", "scores", "labels"} and out["boxes"].shape[1] == 4


def test_backbone_weights_come_from_a_classifier_and_freeze_as_torchvision_does(tmp_path):
    classifier = resnetlab.create_model("resnet18", num_classes=10)
    path = resnetlab.save_weights(classifier, tmp_path / "r18.safetensors")
    det = create_detector("fasterrcnn_resnet18_fpn", num_classes=2, backbone_weights=path)
    body = det.backbone.body
    assert torch.equal(body.layer2[0].conv1.weight, classifier.layer2[0].conv1.weight)
    assert not hasattr(body, "fc")
    trainable = {n.split(".")[0] for n, p in body.named_parameters() if p.requires_grad}
    assert trainable == {"layer2", "layer3", "layer4"}  # weights given: 3 stages train (torchvision's default)
    scratch = create_detector("retinanet_resnet18_fpn", num_classes=2, trainable_layers=0)
    assert not any(p.requires_grad for p in scratch.backbone.body.parameters())
    with pytest.raises(ValueError, match="trainable_layers must be 0..5, got 7"):
        create_detector("fcos_resnet18_fpn", num_classes=2, trainable_layers=7)


@pytest.mark.parametrize("backbone", ["se_resnet18", "resnet34"])
def test_any_resnet_family_trunk_of_the_zoo_carries_a_detector(backbone):
    model = create_detector("fasterrcnn_resnet18_fpn", num_classes=2, backbone=backbone, min_size=64, max_size=64)
    assert model.backbone_name == backbone
    model.eval()
    with torch.no_grad():
        model([torch.rand(3, 64, 64)])


def test_bad_detector_and_segmenter_names_are_refused():
    with pytest.raises(ValueError, match="detector names are <fasterrcnn|retinanet|fcos>_<backbone>_fpn"):
        create_detector("yolo_resnet18", num_classes=2)
    with pytest.raises(ValueError, match="segmenter names are"):
        create_segmenter("unet_resnet18", num_classes=2)
    with pytest.raises(ValueError, match="output_stride must be 8, 16 or 32, got 4"):
        create_segmenter("deeplabv3_resnet18", num_classes=2, output_stride=4)


@pytest.mark.parametrize("stride", [8, 16, 32])
def test_deeplabv3_on_resnet18_at_every_output_stride(stride):
    model = create_segmenter("deeplabv3_resnet18", num_classes=5, output_stride=stride, aux_loss=True).eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        feats, out = model.backbone(x), model(x)
    assert feats["out"].shape[-2:] == (64 // stride, 96 // stride) and feats["out"].shape[1] == 512
    assert out["out"].shape == (1, 5, 64, 96) and out["aux"].shape == (1, 5, 64, 96)


def test_fcn_and_backbone_weights_for_a_segmenter(tmp_path):
    classifier = resnetlab.create_model("resnet18", num_classes=7)
    path = resnetlab.save_weights(classifier, tmp_path / "r18.safetensors")
    model = create_segmenter("fcn_resnet18", num_classes=3, backbone_weights=path).eval()
    assert torch.equal(model.backbone.body.layer3[0].conv1.weight, classifier.layer3[0].conv1.weight)
    with torch.no_grad():
        assert model(torch.rand(2, 3, 48, 48))["out"].shape == (2, 3, 48, 48)
