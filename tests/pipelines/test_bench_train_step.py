"""``make bench-train-step``: the open_clip comparison is like for like, and bf16 is detected, not assumed."""

from __future__ import annotations

import pytest
import torch

from pipelines.bench import train_step as bench


def test_bf16_detection_says_why():
    native, why = bench.native_bf16()
    assert isinstance(native, bool) and why


@pytest.mark.slow
def test_our_towers_at_open_clip_sizes_do_the_same_work_per_step():
    pytest.importorskip("open_clip")
    import open_clip
    from open_clip.loss import ClipLoss

    from encoders import MultimodalModel, clip_loss

    reports = bench._reports(2, torch.Generator().manual_seed(0))
    images = torch.rand(2, 3, 224, 224)
    ours = MultimodalModel(bench._open_clip_sizes_config(256))
    context = int(ours.towers["text"].tokenize(reports)["input_ids"].shape[1])
    theirs = bench._open_clip_model(256, context)
    tokens = open_clip.tokenize(reports, context_length=context)
    our_flops = bench._flops(
        lambda: clip_loss(
            ours.encode("image", images), ours.encode("text", reports), ours.logit_scale
        ).backward()
    )
    their_flops = bench._flops(lambda: ClipLoss()(*theirs(images, tokens)).backward())
    assert our_flops == pytest.approx(their_flops, rel=0.03)
