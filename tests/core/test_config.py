"""Configuration dataclasses: validation, manifest round trips, selection size."""

from __future__ import annotations

import json

import pytest

from indexer.config import BuildConfig, WarmupConfig
from less_core.config import (
    AdamFeatureConfig,
    LoraSettings,
    ProjectionConfig,
    SelectionConfig,
    TokenizationConfig,
)
from less_core.errors import ConfigError

ALL = [
    LoraSettings,
    TokenizationConfig,
    WarmupConfig,
    ProjectionConfig,
    AdamFeatureConfig,
    BuildConfig,
    SelectionConfig,
]


def test_paper_defaults():
    assert (LoraSettings().rank, LoraSettings().alpha, LoraSettings().dropout) == (128, 512.0, 0.1)
    assert LoraSettings().target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert ProjectionConfig().dim == 8192 and ProjectionConfig().kind == "rademacher"
    a = AdamFeatureConfig()
    assert a.eps_placement == "inside" and a.bias_correction is False
    w = WarmupConfig()
    assert (w.fraction, w.epochs, w.learning_rate, w.warmup_ratio) == (0.05, 4, 2e-5, 0.03)


@pytest.mark.parametrize("cls", ALL)
def test_round_trip_through_json(cls):
    cfg = cls()
    data = json.loads(json.dumps(cfg.to_dict()))
    assert cls.from_dict(data) == cfg


def test_round_trip_non_defaults():
    cfg = LoraSettings(rank=8, alpha=16, dropout=0.0, target_modules=("q_proj",), layers=(0, 3))
    assert LoraSettings.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    cfg = AdamFeatureConfig(
        eps_placement="outside", bias_correction=True, betas=(0.8, 0.95), eps=1e-6
    )
    assert AdamFeatureConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match="unknown"):
        ProjectionConfig.from_dict({"dim": 8, "colour": "red"})


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (LoraSettings, {"rank": 0}),
        (LoraSettings, {"alpha": 0}),
        (LoraSettings, {"dropout": 1.0}),
        (LoraSettings, {"target_modules": ()}),
        (LoraSettings, {"layers": (-1,)}),
        (TokenizationConfig, {"max_length": 1}),
        (WarmupConfig, {"fraction": 0.0}),
        (WarmupConfig, {"epochs": 0}),
        (AdamFeatureConfig, {"eps_placement": "middle"}),
        (AdamFeatureConfig, {"betas": (0.9, 1.0)}),
        (AdamFeatureConfig, {"eps": 0.0}),
        (BuildConfig, {"feature_dtype": "bfloat16"}),
        (SelectionConfig, {"k": 5, "fraction": 0.1}),
        (SelectionConfig, {"k": 0}),
        (SelectionConfig, {"fraction": 1.5}),
        (SelectionConfig, {"aggregate": "sum"}),
    ],
)
def test_invalid_values(cls, kwargs):
    with pytest.raises(ConfigError):
        cls(**kwargs)


def test_resolve_k():
    assert SelectionConfig().resolve_k(1000) == 50  # default 5 %
    assert SelectionConfig().resolve_k(10) == 1  # at least one
    assert SelectionConfig(fraction=1.0).resolve_k(7) == 7
    assert SelectionConfig(fraction=0.3).resolve_k(10) == 3
    assert SelectionConfig(k=7).resolve_k(7) == 7
    with pytest.raises(ConfigError):
        SelectionConfig(k=8).resolve_k(7)
