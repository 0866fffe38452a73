"""Each tower encodes its modality, honours its masks and round-trips save_pretrained / from_pretrained."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModel

from encoders import EcgTransformerConfig, EcgTransformerModel
from encoders.towers import build_tower, load_tower
from encoders.towers.audio import WhisperLogMel


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


def whisper_tower(make_tower, mode: str = "full", **overrides):
    """A tiny Whisper speech tower: 80 mel bins, 5 encoder positions = 10 mel frames = 1600 samples."""
    return make_tower("audio", mode, audio_arch="whisper", max_source_positions=5, **overrides)


@pytest.mark.parametrize("mode", ["lora", "full", "frozen"])
@pytest.mark.parametrize("kind", ["image", "ecg", "audio", "whisper", "text"])
def test_tower_round_trips_save_and_load(kind, mode, make_tower, tiny_bert_dir, tmp_path):
    if kind == "whisper":
        config, kind = whisper_tower(make_tower, mode), "audio"
    else:
        config = make_tower(kind, mode, pretrained=str(tiny_bert_dir) if kind == "text" else None)
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


def test_whisper_log_mel_matches_the_whisper_feature_extractor():
    from transformers import WhisperFeatureExtractor

    waveform = 0.1 * torch.randn(2, 12000, generator=torch.Generator().manual_seed(0))
    extractor = WhisperFeatureExtractor(
        feature_size=80, sampling_rate=16000, hop_length=160, n_fft=400, chunk_length=1
    )
    expected = extractor(list(waveform.numpy()), sampling_rate=16000, return_tensors="pt").input_features
    features, frames = WhisperLogMel(n_mels=80, n_frames=100)(waveform, torch.tensor([12000, 12000]))
    assert features.shape == (2, 80, 100)
    torch.testing.assert_close(features, expected, atol=1e-4, rtol=1e-4)
    assert frames.tolist() == [75, 75]  # 10 ms frames whose centre lies in the 0.75 s of speech


def test_mel_mean_norm_centres_each_band_over_the_speech_frames():
    log_mel = WhisperLogMel(n_mels=80, n_frames=100, subtract_mean=True)
    features, frames = log_mel(torch.randn(2, 16000), torch.tensor([16000, 8000]))
    assert frames.tolist() == [100, 50]
    torch.testing.assert_close(features[0].mean(dim=1), torch.zeros(80), atol=1e-5, rtol=0)
    torch.testing.assert_close(features[1, :, :50].mean(dim=1), torch.zeros(80), atol=1e-5, rtol=0)
    assert (features[1, :, 50:] == 0).all()
    # A constant gain on the speech (a louder channel) shifts every log band equally: removed.
    louder, _ = log_mel(4 * torch.randn(1, 16000, generator=torch.Generator().manual_seed(1)), frames[:1])
    quiet, _ = log_mel(torch.randn(1, 16000, generator=torch.Generator().manual_seed(1)), frames[:1])
    torch.testing.assert_close(louder, quiet, atol=1e-4, rtol=0)


def test_whisper_tower_encodes_waveforms_to_pooled_features(make_tower):
    tower = build_tower(whisper_tower(make_tower, num_layers=2)).eval()
    assert type(tower.base_model).__name__ == "WhisperEncoder"
    assert tower.base_model.config.num_mel_bins == 80 and tower.base_model.config.encoder_layers == 2
    features = tower(torch.randn(3, 1000), lengths=torch.tensor([1000, 640, 160]))
    assert features.shape == (3, tower.hidden_size) == (3, 32) and torch.isfinite(features).all()


@pytest.mark.parametrize("mel_mean_norm", [False, True])
def test_whisper_padding_does_not_change_features(make_tower, mel_mean_norm):
    tower = build_tower(whisper_tower(make_tower, mel_mean_norm=mel_mean_norm)).eval()
    speech = torch.randn(1, 1200)
    alone = tower(speech)
    padded = torch.cat([speech, 100 * torch.randn(1, 400)], dim=1)
    torch.testing.assert_close(tower(padded, lengths=torch.tensor([1200])), alone, atol=1e-5, rtol=1e-5)
    # In a batch with a longer utterance the shorter one is padded by the collator: same features.
    batch = torch.cat([padded, torch.randn(1, 1600)])
    mask = torch.ones(2, 1600, dtype=torch.long)
    mask[0, 1200:] = 0
    torch.testing.assert_close(tower(batch, attention_mask=mask)[:1], alone, atol=1e-5, rtol=1e-5)
    # ...while the valid part is information: the same samples counted as speech encode differently.
    assert not torch.allclose(tower(padded), alone, atol=1e-3)


def test_whisper_speech_longer_than_its_positions_is_cropped(make_tower):
    tower = build_tower(whisper_tower(make_tower)).eval()
    speech = torch.randn(2, 2400)
    torch.testing.assert_close(tower(speech), tower(speech[:, :1600]))


def test_whisper_gradients_reach_every_trainable_parameter(make_tower):
    tower = build_tower(whisper_tower(make_tower, "full")).train()
    tower(torch.randn(2, 1600), lengths=torch.tensor([1600, 900])).pow(2).sum().backward()
    for name, param in tower.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert tower.base_model.conv1.weight.grad.abs().sum() > 0


def test_whisper_tower_takes_the_encoder_of_a_whole_local_whisper(make_tower, tmp_path):
    from transformers import WhisperConfig, WhisperModel

    config = WhisperConfig(
        num_mel_bins=80,
        max_source_positions=5,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
    )
    whole = WhisperModel(config).eval()
    whole.save_pretrained(tmp_path)
    tower = build_tower(make_tower("audio", "frozen", pretrained=str(tmp_path))).eval()
    assert tower.hidden_size == 16 and tower.log_mel is not None
    features, _ = tower.log_mel(torch.randn(1, 1600), torch.tensor([1600]))
    torch.testing.assert_close(
        tower.base_model(features).last_hidden_state, whole.encoder(features).last_hidden_state
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


def resnet_tower(make_tower, mode: str = "full", **overrides):
    """A tiny ResNet image tower: a stem of 8 channels, two one-block stages of 8 and 16 channels."""
    values = dict(
        image_arch="resnet", resnet_embedding_size=8, resnet_hidden_sizes=[8, 16], resnet_depths=[1, 1]
    )
    return make_tower("image", mode, **{**values, **overrides})


@pytest.mark.parametrize("mode", ["full", "frozen"])
def test_resnet_image_tower_round_trips_save_and_load(mode, make_tower, tmp_path):
    tower = build_tower(resnet_tower(make_tower, mode))
    tower.train()(torch.rand(4, 1, 32, 32))  # move the batch-norm running statistics off their init
    tower.eval()
    pixels = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    expected = tower(pixels)
    assert tower.hidden_size == 16 and expected.shape == (2, 16) and torch.isfinite(expected).all()
    tower.save(tmp_path)
    loaded = load_tower(tower.config, tmp_path).eval()
    torch.testing.assert_close(loaded(pixels), expected)


def test_resnet_image_tower_accepts_any_input_size_and_grey_equals_rgb(make_tower):
    tower = build_tower(resnet_tower(make_tower)).eval()
    for height, width in [(32, 32), (48, 40), (64, 64)]:
        grey = torch.rand(2, 1, height, width)
        features = tower(grey)
        assert features.shape == (2, 16)
        torch.testing.assert_close(features, tower(grey.repeat(1, 3, 1, 1)))


def test_resnet_full_tuning_trains_every_parameter_from_the_first_conv(make_tower):
    tower = build_tower(resnet_tower(make_tower, "full")).train()
    tower(torch.rand(3, 1, 32, 32)).square().sum().backward()
    stem = tower.base_model.embedder.embedder.convolution.weight
    assert stem.grad is not None and stem.grad.abs().sum() > 0
    assert all(p.requires_grad and p.grad is not None for p in tower.parameters())


def test_resnet_tower_loads_a_local_pretrained_resnet_with_its_normalisation(make_tower, tmp_path):
    from transformers import ResNetConfig, ResNetModel

    torch.manual_seed(0)
    source = ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 24], depths=[1, 1])).eval()
    source.save_pretrained(tmp_path)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # an ImageNet processor's values
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": mean, "image_std": std}))
    tower = build_tower(resnet_tower(make_tower, "frozen", pretrained=str(tmp_path))).eval()
    assert tower.hidden_size == 24
    pixels = torch.rand(2, 3, 32, 32)
    normalised = (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(tower(pixels), source(pixel_values=normalised).pooler_output.flatten(1))


def test_image_tower_refuses_pretrained_weights_of_another_arch(make_tower, tmp_path):
    from transformers import ResNetConfig, ResNetModel

    ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8], depths=[1])).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="image_arch"):
        build_tower(make_tower("image", "frozen", pretrained=str(tmp_path)))


def test_multimodal_model_with_a_resnet_image_tower_round_trips(make_config, make_tower, tmp_path):
    from encoders import MultimodalConfig, MultimodalModel

    config = make_config({"image": "full"})
    config.towers["image"] = resnet_tower(make_tower, "full")
    model = MultimodalModel(config)
    model.train()
    model.encode("image", torch.rand(4, 1, 32, 32))  # batch-norm running statistics move
    model.eval()
    pixels = torch.rand(2, 1, 32, 32)
    expected = model.encode("image", pixels)
    assert expected.shape == (2, config.embed_dim)
    model.save_pretrained(tmp_path)
    loaded = MultimodalModel.from_pretrained(tmp_path).eval()
    assert loaded.config.towers["image"] == config.towers["image"]
    assert MultimodalConfig.from_dict(config.to_dict()) == config
    torch.testing.assert_close(loaded.encode("image", pixels), expected)
