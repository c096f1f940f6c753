"""Detection / segmentation data: COCO JSON (boxes, polygons), VOC XML and PNG masks read right, bad files named."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from extras_helpers import need
from resnetlab.data.detection import collate_detection, read_coco, read_mask_folder, read_voc


def _image(path, w=40, h=30, seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


def _coco(tmp_path, anns, cats=({"id": 7, "name": "cell"}, {"id": 3, "name": "dot"})):
    (tmp_path / "img").mkdir(exist_ok=True)
    _image(tmp_path / "img" / "a.png")
    (tmp_path / "a.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
        "annotations": anns, "categories": list(cats)}))
    return tmp_path / "a.json", tmp_path / "img"


def test_coco_boxes_labels_and_polygon_masks(tmp_path):
    need("pycocotools", "detection")
    poly = [[5, 5, 15, 5, 15, 12, 5, 12]]
    ann, img = _coco(tmp_path, [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [5, 5, 10, 7], "segmentation": poly, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [20, 10, 5, 5], "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": 3, "bbox": [0, 0, 30, 30], "iscrowd": 1}])
    ds = read_coco(ann, img, with_masks=True)
    x, t, path = ds[0]
    assert ds.classes == ["__background__", "dot", "cell"] and x.shape == (3, 30, 40)
    assert t["boxes"].tolist() == [[5, 5, 15, 12], [20, 10, 25, 15]] and t["labels"].tolist() == [2, 1]
    assert t["masks"].shape == (2, 30, 40) and 60 <= int(t["masks"][0].sum()) <= 90  # the 10x7 polygon
    images, targets, bad = collate_detection([ds[0], (None, None, "broken.jpg")])
    assert len(images) == 1 and bad == ["broken.jpg"]


@pytest.mark.parametrize("anns,message", [
    ([{"id": 9, "image_id": 2, "category_id": 7, "bbox": [1, 1, 2, 2]}], "annotation 9: image_id 2"),
    ([{"id": 9, "image_id": 1, "category_id": 5, "bbox": [1, 1, 2, 2]}], "category_id 5 is not among"),
    ([{"id": 9, "image_id": 1, "category_id": 7, "bbox": [1, 1, 0, 2]}], "has no area"),
])
def test_bad_coco_files_name_the_annotation(tmp_path, anns, message):
    ann, img = _coco(tmp_path, anns)
    with pytest.raises(ValueError, match=message):
        read_coco(ann, img)
    (tmp_path / "b.json").write_text("{\"images\": []}")
    with pytest.raises(ValueError, match="b.json: not a COCO annotation file"):
        read_coco(tmp_path / "b.json", img)


def test_voc_xml(tmp_path):
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "Annotations").mkdir()
    _image(tmp_path / "JPEGImages" / "x.jpg")
    (tmp_path / "Annotations" / "x.xml").write_text(
        "<annotation><filename>x.jpg</filename>"
        "<object><name>dog</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>11</xmax><ymax>12</ymax></bndbox></object>"
        "<object><name>cat</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>9</xmax><ymax>20</ymax></bndbox></object>"
        "</annotation>")
    ds = read_voc(tmp_path / "Annotations", tmp_path / "JPEGImages")
    _, t, _ = ds[0]
    assert ds.classes == ["__background__", "cat", "dog"] and t["labels"].tolist() == [2, 1]
    assert t["boxes"].tolist() == [[1, 2, 11, 12], [5, 5, 9, 20]]
    (tmp_path / "Annotations" / "x.xml").write_text("<annotation><filename>x.jpg</filename><object>")
    with pytest.raises(ValueError, match="x.xml: not a VOC annotation"):
        read_voc(tmp_path / "Annotations", tmp_path / "JPEGImages")


def test_instance_and_semantic_png_masks(tmp_path):
    for d in ("img", "mask"):
        (tmp_path / d).mkdir()
    _image(tmp_path / "img" / "a.png")
    mask = np.zeros((30, 40), np.uint8)
    mask[2:6, 3:9] = 1
    mask[10:20, 20:25] = 2
    Image.fromarray(mask).save(tmp_path / "mask" / "a.png")
    inst = read_mask_folder(tmp_path / "img", tmp_path / "mask")
    _, t, _ = inst[0]
    assert t["boxes"].tolist() == [[3, 2, 9, 6], [20, 10, 25, 20]] and t["masks"].sum().item() == 24 + 50
    sem = read_mask_folder(tmp_path / "img", tmp_path / "mask", kind="semantic")
    _, t, _ = sem[0]
    assert sem.classes == ["__background__", "1", "2"] and torch.equal(t["semantic"], torch.from_numpy(mask).long())
    Image.fromarray(mask[:, :20]).save(tmp_path / "mask" / "a.png")
    with pytest.raises(ValueError, match="a.png: a mask must be one channel of the image's size"):
        read_mask_folder(tmp_path / "img", tmp_path / "mask")
