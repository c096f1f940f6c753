import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def real_cifar10(tmp_path_factory):
    """CIFAR-10 as JPEG folders: unpacked already, or unpacked from ../shared/data for this session."""
    import os
    from pathlib import Path

    for cand in (os.environ.get("RESNETLAB_DATA"), "~/.cache/resnetlab/cifar10"):
        if cand:
            path = Path(cand).expanduser()
            path = path / "cifar10" if (path / "cifar10" / "test").is_dir() else path
            if (path / "train").is_dir() and (path / "test").is_dir():
                return path
    archive = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"
    if not archive.is_file():
        pytest.skip(f"real CIFAR-10 not found: neither ~/.cache/resnetlab/cifar10, $RESNETLAB_DATA nor {archive}")
    from resnetlab.data import unpack_image_archive

    return unpack_image_archive(archive, tmp_path_factory.mktemp("cifar10"))
