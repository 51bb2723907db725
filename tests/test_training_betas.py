"""One definition of the per-module KL weights: config.betas, used by the training wrapper."""

import pytest

from smooth_infomax.config import betas, load_config
from smooth_infomax.errors import ConfigError
from smooth_infomax.model import SmoothInfoMax


def cfg(kind="sim", beta=0.01):
    return load_config({"model": {"preset": "paper", "kind": kind, "channels": 8, "gru_hidden": 8},
                        "loss": {"beta": beta, "prediction_steps": 3, "negatives": 4}})


@pytest.mark.parametrize("beta,expected", [(0.02, [0.02] * 3), ([0.5], [0.5] * 3), ([0.1, 0.2, 0.3], [0.1, 0.2, 0.3]),
                                           (0, [0.0] * 3)])
def test_config_betas_are_the_wrappers_betas(beta, expected):
    c = cfg(beta=beta)
    assert betas(c) == expected  # a one-element list applies to every module (it used to stay one value long)
    assert SmoothInfoMax(c.model, c.loss).betas == expected
    assert all(isinstance(b, float) for b in betas(c))


@pytest.mark.parametrize("kind", ["gim", "cpc"])
def test_no_kl_weight_without_posteriors(kind):
    c = cfg(kind, beta=[0.1, 0.2, 0.3])
    assert betas(c) == [0.0] * 3 == SmoothInfoMax(c.model, c.loss).betas


def test_a_list_of_the_wrong_length_names_the_key():
    c = cfg()
    c.loss.beta = [0.1, 0.2]  # bypasses load_config's validation, e.g. a config edited in code
    with pytest.raises(ConfigError, match=r"loss\.beta.*2 values for 3"):
        betas(c)
    with pytest.raises(ConfigError, match=r"loss\.beta"):
        SmoothInfoMax(c.model, c.loss)
