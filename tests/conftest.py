"""Shared fixtures: torch on a fixed thread count, tiny configs that train in about a second."""

import pytest
import torch

from resnet_viz.data import DataConfig
from resnet_viz.models import ModelConfig
from resnet_viz.training import TrainConfig

torch.set_num_threads(2)


@pytest.fixture
def tiny_models() -> dict[str, ModelConfig]:
    """A plain and a residual depth-8 CNN: the smallest pair of the CIFAR-style family."""
    return {"plain": ModelConfig(depth=8, width=8, skip=False), "residual": ModelConfig(depth=8, width=8)}


@pytest.fixture
def tiny_train() -> TrainConfig:
    return TrainConfig(epochs=1, batch_size=128, warmup_steps=0)


@pytest.fixture
def digits() -> DataConfig:
    return DataConfig(name="digits")
