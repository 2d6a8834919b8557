"""New heads on top of backbone features."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tl_core.config import CLASSICAL_HEADS, HeadConfig
from tl_core.errors import ConfigError
from tl_core.model.heads import KNNHead, make_head


def test_linear_head_is_default():
    head = make_head(HeadConfig(), 16, 3)
    assert isinstance(head, nn.Linear) and (head.in_features, head.out_features) == (16, 3)
    assert head(torch.randn(2, 16)).shape == (2, 3)


def test_mlp_head_is_the_keras_seed_recipe():
    head = make_head(HeadConfig(kind="mlp", hidden=32, dropout=0.5), 16, 4)
    assert [type(m) for m in head] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert head[0].out_features == 32 and head[2].p == 0.5 and head[3].out_features == 4
    assert head(torch.randn(2, 16)).shape == (2, 4)


@pytest.mark.parametrize("kind", [k for k in CLASSICAL_HEADS if k != "knn"])
def test_classical_heads_are_linear_placeholders(kind):
    head = make_head(HeadConfig(kind=kind), 8, 2)
    assert isinstance(head, nn.Linear) and head.out_features == 2


def test_knn_head_is_an_empty_neighbour_store_until_fitted():
    head = make_head(HeadConfig(kind="knn", neighbours=3), 8, 2)
    assert isinstance(head, KNNHead) and head.neighbours == 3 and head.train_features.shape == (0, 8)
    assert list(head.parameters()) == []  # nothing for an optimiser: it is fitted, not trained
    with pytest.raises(ConfigError, match="neighbour"):
        make_head(HeadConfig(kind="knn", neighbours=0), 8, 2)


def test_bad_head_settings_are_config_errors():
    with pytest.raises(ConfigError, match="linear, mlp"):
        make_head(HeadConfig(kind="transformer"), 8, 2)
    with pytest.raises(ConfigError, match="dropout"):
        make_head(HeadConfig(kind="mlp", dropout=1.5), 8, 2)
    with pytest.raises(ConfigError):
        make_head(HeadConfig(), 8, 0)
