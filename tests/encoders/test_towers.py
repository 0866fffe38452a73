"""Each tower encodes its modality, honours its masks and round-trips save_pretrained / from_pretrained."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel

from encoders import EcgTransformerConfig, EcgTransformerModel
from encoders.towers import build_tower, load_tower


def tower_inputs(kind: str) -> tuple:
    generator = torch.Generator().manual_seed(3)
    if kind == "image":
        return (torch.rand(2, 1, 32, 32, generator=generator),), {}
    if kind == "ecg":
        mask = torch.ones(2, 12, dtype=torch.bool)
        mask[1, 4:] = False
        return (torch.randn(2, 12, 250, generator=generator),), {"lead_mask": mask}
    if kind == "audio":
        return (torch.randn(2, 1600, generator=generator),), {"lengths": torch.tensor([1600, 1200])}
    return (["no acute cardiopulmonary process", "sinus rhythm"],), {}


@pytest.mark.parametrize("mode", ["lora", "full", "frozen"])
@pytest.mark.parametrize("kind", ["image", "ecg", "audio", "text"])
def test_tower_round_trips_save_and_load(kind, mode, make_tower, tiny_bert_dir, tmp_path):
    pretrained = str(tiny_bert_dir) if kind == "text" else None
    config = make_tower(kind, mode, pretrained=pretrained)
    tower = build_tower(config).eval()
    if mode == "lora":  # make the adapter non-trivial (peft initialises B = 0)
        with torch.no_grad():
            for name, param in tower.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.5)
    args, kwargs = tower_inputs(kind)
    expected = tower(*args, **kwargs)
    assert expected.shape == (2, tower.hidden_size) and torch.isfinite(expected).all()
    tower.save(tmp_path)
    assert (tmp_path / "base" / "config.json").is_file()
    assert (tmp_path / "adapter" / "adapter_config.json").is_file() == (mode == "lora")
    loaded = load_tower(config, tmp_path).eval()
    torch.testing.assert_close(loaded(*args, **kwargs), expected)


def test_ecg_model_opens_with_automodel_after_save(tmp_path):
    model = EcgTransformerModel(
        EcgTransformerConfig(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_len=100,
            patch_len=25,
        )
    ).eval()
    model.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, EcgTransformerModel)
    signal = torch.randn(1, 12, 100)
    torch.testing.assert_close(reloaded(signal).last_hidden_state, model(signal).last_hidden_state)


def test_ecg_masked_leads_are_excluded_whatever_they_hold(make_tower):
    tower = build_tower(make_tower("ecg", "full")).eval()
    signal = torch.randn(1, 12, 250)
    mask = torch.ones(1, 12, dtype=torch.bool)
    mask[0, [2, 7]] = False
    noisy = signal.clone()
    noisy[0, [2, 7]] = torch.randn(2, 250) * 100
    torch.testing.assert_close(tower(noisy, lead_mask=mask), tower(signal, lead_mask=mask))
    # ...while the mask itself is information: the same signal with all leads present encodes differently.
    assert not torch.allclose(tower(signal, lead_mask=torch.ones_like(mask)), tower(signal, lead_mask=mask))


def test_ecg_with_no_present_lead_gives_finite_features(make_tower):
    tower = build_tower(make_tower("ecg", "full")).eval()
    features = tower(torch.randn(2, 12, 250), lead_mask=torch.zeros(2, 12, dtype=torch.bool))
    assert torch.isfinite(features).all()


def test_ecg_longer_than_max_len_is_refused(make_tower):
    tower = build_tower(make_tower("ecg", "full"))
    with pytest.raises(ValueError, match="max_len"):
        tower(torch.randn(1, 12, 300))


def test_audio_padding_does_not_change_features(make_tower):
    tower = build_tower(make_tower("audio", "full")).eval()
    waveform = torch.randn(1, 1200)
    padded = torch.cat([waveform, torch.randn(1, 400)], dim=1)
    torch.testing.assert_close(
        tower(padded, lengths=torch.tensor([1200])), tower(waveform), atol=1e-4, rtol=1e-4
    )


def test_grey_image_equals_its_three_channel_copy(make_tower):
    tower = build_tower(make_tower("image", "full")).eval()
    grey = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(tower(grey), tower(grey.repeat(1, 3, 1, 1)))


def test_text_tower_defaults_to_the_offline_minilm_with_mean_pooling(make_tower, minilm_dir):
    from transformers import AutoTokenizer

    tower = build_tower(make_tower("text", "lora", hidden_size=384)).eval()
    assert tower.hidden_size == 384
    assert tower.config.lora.target_modules is None
    trainable = [n for n, p in tower.named_parameters() if p.requires_grad]
    assert trainable and all(".query.lora_" in n or ".value.lora_" in n for n in trainable)
    texts = ["cardiomegaly", "normal sinus rhythm with left bundle branch block"]
    # Reference: plain transformers + the sentence-transformers mean pooling recipe.
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    model = AutoModel.from_pretrained(minilm_dir).eval()
    tokens = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**tokens).last_hidden_state
    mask = tokens["attention_mask"].unsqueeze(-1).float()
    expected = (hidden * mask).sum(1) / mask.sum(1)
    with torch.no_grad():
        torch.testing.assert_close(tower(texts), expected, atol=1e-5, rtol=1e-4)
    similarity = torch.nn.functional.cosine_similarity(
        *tower.pretrained_features(["heart failure", "cardiac failure"]), dim=0
    )
    assert similarity > 0.5  # the real pretrained model, not random weights
