"""DICOM: rescale, window, MONOCHROME1, bit depths, refused files, and a folder of .dcm files that trains.

Files come from two places: ones the tests write with pydicom (known pixel values, so the expected
8-bit output is worked out by hand from DICOM PS3.3 C.11.2.1.2.1), and the files the pydicom wheel ships.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file  # the [medical] extra, which make test installs: never skipped
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from resnetlab import Predictor, load_trained
from resnetlab.data import open_dataset
from resnetlab.data.dicom import dicom_header, dicom_image
from resnetlab.data.folder import load_image, read_header
from resnetlab.data.preprocess import parse_window


def write_dicom(path: Path, pixels: np.ndarray, *, signed: bool = False, bits: int = 12, **tags) -> Path:
    """A single-frame grayscale DICOM file holding ``pixels`` exactly, with any extra ``tags``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, int(signed)
    ds.PixelData = pixels.astype(np.int16 if signed else np.uint16).tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_rescale_then_window_as_the_standard_defines(tmp_path):
    # stored 1000..3000, slope 1, intercept -1024 -> -24..1976 HU; window centre 40, width 400 (soft tissue)
    stored = np.array([[0, 1004], [1064, 1500]], dtype=np.uint16)
    path = write_dicom(tmp_path / "ct.dcm", stored, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40,
                       WindowWidth=400)
    got = np.asarray(dicom_image(str(path)))
    # HU -1024, -20, 40, 476: y = ((x - 39.5) / 399 + 0.5) * 255, rounded and clipped: 0, 89.5 -> 89, 127.8, 255
    assert got.tolist() == [[0, 89], [128, 255]]
    assert dicom_header(str(path)) == (2, 2, "L")


def test_signed_16_bit_multi_valued_window_and_no_window(tmp_path):
    stored = np.array([[-2000, -1000], [0, 3000]], dtype=np.int16)
    two = write_dicom(tmp_path / "two.dcm", stored, signed=True, bits=16, WindowCenter=[0, 500],
                      WindowWidth=[2001, 100])
    # the first window: centre 0, width 2001: y = ((x + 0.5) / 2000 + 0.5) * 255
    assert np.asarray(dicom_image(str(two))).tolist() == [[0, 0], [128, 255]]
    plain = write_dicom(tmp_path / "plain.dcm", stored, signed=True, bits=16)  # no window: min-max to 0..255
    assert np.asarray(dicom_image(str(plain))).tolist() == [[0, 51], [102, 255]]


def test_monochrome1_is_inverted(tmp_path):
    stored = np.array([[0, 100], [200, 400]], dtype=np.uint16)
    m2 = np.asarray(dicom_image(str(write_dicom(tmp_path / "m2.dcm", stored))))
    m1 = np.asarray(dicom_image(str(write_dicom(tmp_path / "m1.dcm", stored, PhotometricInterpretation="MONOCHROME1"))))
    assert (m1 == 255 - m2).all() and m2[1, 1] == 255 and m1[1, 1] == 0


def test_the_files_pydicom_ships():
    ct = get_testdata_file("CT_small.dcm")
    img = dicom_image(ct)
    assert img.mode == "L" and img.size == (128, 128)
    a = np.asarray(img)
    assert a.min() == 0 and a.max() == 255 and len(np.unique(a)) > 100  # the range is used, not a flat image
    assert load_image(ct, "RGB", (64, 64)).size == (64, 64)  # the folder reader takes .dcm like any image
    rgb = dicom_image(get_testdata_file("SC_rgb_small_odd.dcm"))
    assert rgb.mode == "RGB"
    for name, match in (("rtdose.dcm", "multi-frame DICOM"), ("rtplan.dcm", "without image pixel data"),
                        ("reportsi.dcm", "without image pixel data")):
        with pytest.raises(ValueError, match=match):
            dicom_image(get_testdata_file(name))
        assert match in read_header(get_testdata_file(name))  # the folder reader reports and skips it


def test_not_a_dicom_and_a_truncated_one(tmp_path):
    fake = tmp_path / "x.dcm"
    fake.write_text("hello")
    assert "not a DICOM file" in read_header(str(fake))
    with pytest.raises(Exception, match=str(fake.name)):
        load_image(str(fake), "L")
    truncated = get_testdata_file("MR_truncated.dcm")
    with pytest.raises(ValueError, match="MR_truncated.dcm"):
        dicom_image(truncated)


def test_a_folder_of_dicoms_trains_and_skips_a_corrupt_one(tmp_path):
    from train_helpers import tiny_config

    from resnetlab.train.engine import fit

    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 4)):
        for label, base in (("normal", 600), ("lesion", 1400)):
            for i in range(n):
                pixels = np.clip(rng.normal(base, 200, (8, 8)), 0, 4095).astype(np.uint16)
                write_dicom(tmp_path / "data" / split / label / f"{i:02d}.dcm", pixels, WindowCenter=1000,
                            WindowWidth=2000)
    (tmp_path / "data" / "train" / "lesion" / "bad.dcm").write_bytes(b"DICM but not really")
    result = fit(tiny_config(tmp_path / "data", tmp_path / "run", epochs=1, window="800,1600"))
    s = result.summary
    assert s["skipped_files"] == 1 and s["num_train"] + s["num_val"] == 24
    assert result.classes == ["lesion", "normal"]
    # the window given replaces the files' own, keys the cache, and travels with the model into prediction
    own = open_dataset(tmp_path / "data", "test", cache_dir=tmp_path / "c", progress=False)
    given = open_dataset(tmp_path / "data", "test", cache_dir=tmp_path / "c", progress=False, window=(800, 1600))
    assert not np.array_equal(own.images, given.images)
    assert load_trained(result.run_dir).preprocess.window == (800.0, 1600.0)
    predictor = Predictor(result.run_dir, backend="torch")
    first = sorted((tmp_path / "data" / "test" / "lesion").glob("*.dcm"))[0]
    expected = predictor.preprocess([Image.fromarray(np.asarray(dicom_image(str(first), (800, 1600))))])
    assert torch.equal(predictor.preprocess([str(first)]), expected)


def test_a_window_given_replaces_the_files_own(tmp_path):
    stored = np.array([[0, 1004], [1064, 1500]], dtype=np.uint16)
    path = write_dicom(tmp_path / "ct.dcm", stored, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40,
                       WindowWidth=400)
    # HU -1024, -20, 40, 476 in a lung window (centre -600, width 1500): y = ((x + 600.5) / 1499 + 0.5) * 255
    assert np.asarray(dicom_image(str(path), (-600, 1500))).tolist() == [[55, 226], [236, 255]]
    with pytest.raises(ValueError, match="window width must be >= 1"):
        parse_window("40,0")
    with pytest.raises(ValueError, match=r"window must be centre,width \(e.g. 40,400"):
        parse_window("soft")


def test_a_window_of_width_one_is_the_standards_step():
    from resnetlab.data.dicom import window_to_uint8

    assert window_to_uint8(np.array([0.0, 39.0, 39.5, 40.0, 41.0]), 40, 1).tolist() == [0, 0, 0, 255, 255]


def test_non_finite_pixel_values_name_the_file(tmp_path, monkeypatch):
    path = write_dicom(tmp_path / "inf.dcm", np.array([[0, 1], [2, 3]], dtype=np.uint16))
    from resnetlab.data import dicom

    real = dicom.window_to_uint8
    monkeypatch.setattr(dicom, "window_to_uint8", lambda v, c, w: real(v * np.array([[1, np.inf], [1, 1]]), c, w))
    with pytest.raises(ValueError, match=r"inf.dcm: pixel data holds 1 non-finite values"):
        dicom_image(str(path))
