"""Checkpoints hold everything training changes: tuned parameters and the buffers of tuned modules."""

from __future__ import annotations

import dataclasses

import torch

from encoders import MultimodalModel
from pipelines.training.checkpoint import trainable_state
from tests.pipelines.train_helpers import tiny_more_config


def _resnet_model(tmp_path, seed: int) -> MultimodalModel:
    config = tiny_more_config(tmp_path, tmp_path, precision="fp32", device="cpu").model
    config.towers["image"] = dataclasses.replace(
        config.towers["image"],
        image_arch="resnet",
        resnet_embedding_size=8,
        resnet_hidden_sizes=[8, 16],
        resnet_depths=[1, 1],
    )
    torch.manual_seed(seed)
    return MultimodalModel(config)


def test_batch_norm_statistics_travel_with_the_trainable_state(tmp_path):
    trained = _resnet_model(tmp_path, seed=0).train()
    images = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for _ in range(3):  # training-mode forwards move the running statistics
            trained.encode("image", images)
    state = trainable_state(trained)
    stats = [k for k in state if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert stats and all(k.startswith("towers.image.") for k in stats)
    assert all(int(state[k]) == 3 for k in stats if k.endswith("num_batches_tracked"))

    restored = _resnet_model(tmp_path, seed=2)
    restored.load_state_dict(state, strict=False)
    trained.eval(), restored.eval()
    with torch.no_grad():
        torch.testing.assert_close(restored.encode("image", images), trained.encode("image", images))


def test_frozen_modules_keep_their_buffers_out_of_the_checkpoint(tmp_path):
    model = _resnet_model(tmp_path, seed=0)
    model.towers["image"].requires_grad_(False)
    assert not any(k.startswith("towers.image.") for k in trainable_state(model))
