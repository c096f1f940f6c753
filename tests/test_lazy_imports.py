"""`import resnetlab` and the deployment side load no training code; the top-level names still resolve."""

import subprocess
import sys

import pytest

import resnetlab


def test_deployment_side_imports_no_training_code():
    code = ("import sys, resnetlab, resnetlab.deploy, resnetlab.eval, resnetlab.explain\n"
            "print(sorted(m for m in sys.modules if m.startswith(('resnetlab.train', 'resnetlab.compress'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_top_level_names_resolve_to_their_objects():
    from resnetlab.deploy import Predictor
    from resnetlab.train.engine import fit

    assert resnetlab.Predictor is Predictor and resnetlab.fit is fit
    assert callable(resnetlab.explain) and resnetlab.explain.__name__ == "resnetlab.explain"
    assert set(resnetlab.__all__) <= set(dir(resnetlab))
    with pytest.raises(AttributeError, match="no attribute 'fitt'"):
        resnetlab.fitt
