"""benchmarks/tune.py writes a trial's values into a buildable ensemble_compare section."""

import pytest
import yaml

from components.models import build_model
from tests.conftest import ROOT, benchmark_module


def test_trial_values_land_in_the_members_and_weights_without_touching_params():
    base = yaml.safe_load((ROOT / "params.yaml").read_text())["ensemble_compare"]
    values = {"svm_C": 3.0, "svm_gamma_factor": 2.0, "logreg_C": 0.05, "logreg_weight": 0.7}
    section = benchmark_module("tune").section_for({**values, "n_svm_features": 200}, base)
    svm, logreg = section["members"]["svm"], section["members"]["logreg_compare"]
    assert (svm["C"], svm["gamma"], logreg["C"]) == (3.0, 0.01, 0.05)
    assert section["weights"] == {"svm": pytest.approx(0.3), "logreg_compare": 0.7}
    assert svm["features"] == base["members"]["svm"]["features"] and "gamma" not in base["members"]["svm"]
    assert build_model("ensemble", section).weights == section["weights"]  # a section the pipeline accepts
