import os
from pathlib import Path

import pytest
import torch
from extras_helpers import on_ci

# backend="auto" times every runtime on first use (resnetlab.deploy.probe); the suite's many auto Predictors
# take the fixed order instead (subprocesses inherit this), and tests/test_deploy_probe.py measures for real
os.environ.setdefault("RESNETLAB_NO_PROBE", "1")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data from the repo root


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def shared_cifar10(shared: Path = SHARED_DATA) -> Path:
    """``shared/cifar10-jpeg.tar.gz`` unpacked (once) into the resnetlab cache; its data root.

    The cache is :func:`resnetlab.data.default_cache_dir` (``$RESNETLAB_CACHE``): nothing unpacked by
    hand elsewhere on this machine is looked at. Without the archive (a user's fresh clone) the
    test is skipped; on CI (``CI=true``) it fails instead, since there the data must be present.
    """
    archive = shared / "cifar10-jpeg.tar.gz"
    if not archive.is_file():
        reason = f"real CIFAR-10 not found: {archive} is absent (../shared/data is not part of a clone)"
        if on_ci():
            pytest.fail(f"{reason}; with CI=true the real-data tests must run, not skip", pytrace=False)
        pytest.skip(reason)
    from resnetlab.data import default_cache_dir, unpack_image_archive

    return unpack_image_archive(archive, default_cache_dir())


@pytest.fixture(scope="session")
def real_cifar10():
    """CIFAR-10 as JPEG folders (cifar10/train/<class>/*.jpg, cifar10/test/...), from ../shared/data."""
    return shared_cifar10()
