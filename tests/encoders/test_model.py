"""The multimodal model: LoRA trains only adapters, heads and the logit scale; save/load; export."""

from __future__ import annotations

import math

import pytest
import torch

from encoders import ContrastiveObjective, MultimodalConfig, MultimodalModel, PairSpec, default_more_config


def batch(n: int = 4) -> dict:
    generator = torch.Generator().manual_seed(5)
    return {
        "image": torch.rand(n, 1, 32, 32, generator=generator),
        "ecg": torch.randn(n, 12, 250, generator=generator),
        "lead_mask": torch.ones(n, 12, dtype=torch.bool),
        "audio": torch.randn(n, 1600, generator=generator),
        "text": ["pleural effusion", "no finding", "atrial fibrillation", "cardiomegaly"][:n],
    }


def embed_all(model: MultimodalModel, inputs: dict) -> dict[str, torch.Tensor]:
    return {
        "image": model.encode("image", inputs["image"]),
        "ecg": model.encode("ecg", inputs["ecg"], lead_mask=inputs["lead_mask"]),
        "audio": model.encode("audio", inputs["audio"]),
        "text": model.encode("text", inputs["text"]),
    }


def train_step(model: MultimodalModel, steps: int = 1, lr: float = 1e-2) -> list[float]:
    objective = ContrastiveObjective(
        [
            PairSpec("image", "text", weights_from="text"),
            PairSpec("ecg", "text", weights_from="text"),
            PairSpec("audio", "text", weights_from="text"),
        ]
    )
    optimizer = torch.optim.AdamW(model.param_groups(0.01), lr=lr)
    inputs = batch()
    scales = []
    for _ in range(steps):
        features = embed_all(model, inputs)
        reference = {"text": model.reference_text_features(inputs["text"])}
        loss, _ = objective(features, {}, model.logit_scale, reference)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.clamp_logit_scale()
        scales.append(float(model.logit_scale))
    return scales


def test_embeddings_are_unit_vectors_of_the_shared_dimension(make_config):
    model = MultimodalModel(make_config()).eval()
    for name, features in embed_all(model, batch()).items():
        assert features.shape == (4, 16), name
        torch.testing.assert_close(features.norm(dim=-1), torch.ones(4))


def test_lora_step_updates_only_adapters_heads_and_logit_scale(make_config):
    model = MultimodalModel(make_config())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in n or n.startswith("heads.") or n == "logit_scale" for n in trainable)
    train_step(model)
    for name, param in model.named_parameters():
        changed = not torch.equal(before[name], param.detach())
        if name in trainable and (".lora_B." in name or name.startswith("heads.") or name == "logit_scale"):
            assert changed, f"{name} did not train"
        if name not in trainable:
            assert not changed, f"frozen {name} changed"
            assert param.grad is None


def test_trainable_report_counts_adapters_and_heads_per_tower(make_config):
    model = MultimodalModel(make_config({"image": "full", "ecg": "frozen"}))
    report = model.trainable_report()
    assert set(report) == {"image", "ecg", "audio", "text"}
    assert report["image"]["trainable"] == report["image"]["total"]
    assert report["ecg"]["trainable"] == 32 * 16  # the head only
    assert 0 < report["text"]["trainable"] < report["text"]["total"]


def test_logit_scale_learns_and_is_clamped_at_ln_100(make_config):
    model = MultimodalModel(make_config())
    assert float(model.logit_scale) == pytest.approx(math.log(1 / 0.07))
    scales = train_step(model, steps=3, lr=0.05)
    assert scales[-1] != pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        model.logit_scale.fill_(7.0)
    model.clamp_logit_scale()
    assert float(model.logit_scale) == pytest.approx(math.log(100))


def test_param_groups_exempt_biases_norms_embeddings_and_logit_scale(make_config):
    model = MultimodalModel(make_config({"image": "full", "ecg": "full"}))
    groups = {g["name"]: g for g in model.param_groups(0.05)}
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for p in groups["no_decay"]["params"]}
    decay = {names[id(p)] for p in groups["decay"]["params"]}
    assert groups["no_decay"]["weight_decay"] == 0.0 and groups["decay"]["weight_decay"] == 0.05
    assert "logit_scale" in no_decay
    assert any(n.endswith("position_embeddings") for n in no_decay)
    assert any("lead_embeddings" in n for n in no_decay)
    assert all(not n.endswith(".bias") and "norm" not in n for n in decay)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert sum(p.numel() for g in groups.values() for p in g["params"]) == trainable


def test_save_then_load_gives_the_same_embeddings_and_separate_adapters(make_config, tmp_path):
    model = MultimodalModel(make_config({"ecg": "full", "audio": "frozen"}, projection="mlp"))
    train_step(model)
    model.eval()
    expected = embed_all(model, batch())
    model.save_pretrained(tmp_path)
    assert (tmp_path / "towers" / "image" / "adapter" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "towers" / "ecg" / "adapter").exists()
    loaded = MultimodalModel.from_pretrained(tmp_path).eval()
    for name, features in embed_all(loaded, batch()).items():
        torch.testing.assert_close(features, expected[name], msg=lambda m, name=name: f"{name}: {m}")
    assert float(loaded.logit_scale) == float(model.logit_scale)
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == {
        n for n, p in model.named_parameters() if p.requires_grad
    }


def test_merged_lora_model_embeds_like_the_adapted_one(make_config, tmp_path):
    model = MultimodalModel(make_config())
    train_step(model, lr=0.05)
    model.eval()
    expected = embed_all(model, batch())
    model.merge_lora()
    assert not any("lora_" in n for n, _ in model.named_parameters())
    for name, features in embed_all(model, batch()).items():
        torch.testing.assert_close(features, expected[name], atol=1e-5, rtol=1e-4)
    model.save_pretrained(tmp_path)
    reloaded = MultimodalModel.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(
        reloaded.encode("text", batch()["text"]), expected["text"], atol=1e-5, rtol=1e-4
    )


def test_reference_text_features_ignore_the_trained_adapters(make_config):
    model = MultimodalModel(make_config())
    texts = batch()["text"]
    before = model.reference_text_features(texts)
    train_step(model, lr=0.05)
    after = model.reference_text_features(texts)
    torch.testing.assert_close(after, before)
    torch.testing.assert_close(after.norm(dim=-1), torch.ones(4))
    assert not after.requires_grad


def test_fully_tuned_text_keeps_a_frozen_reference(make_config):
    model = MultimodalModel(make_config({"text": "full"}))
    texts = batch()["text"]
    before = model.reference_text_features(texts)
    train_step(model, lr=0.05)
    torch.testing.assert_close(model.reference_text_features(texts), before)
    assert not any(p.requires_grad is False for n, p in model.towers["text"].named_parameters())


def test_default_configs_round_trip_through_dicts():
    config = default_more_config()
    assert MultimodalConfig.from_dict(config.to_dict()) == config
    assert config.towers["text"].pretrained is None and config.towers["text"].lora.mode == "lora"
