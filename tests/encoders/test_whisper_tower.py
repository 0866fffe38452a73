"""The pretrained Whisper speech tower: packaged tiny.en weights, LoRA on attention and MLP, the batch's own
length instead of a 30 s window, and a mean over the frames that hold speech."""

from __future__ import annotations

import pytest
import torch

from encoders import LoraSettings, MultimodalConfig, MultimodalModel, TowerConfig
from encoders.pretrained import WHISPER_TINY_EN
from encoders.towers import build_tower, load_tower
from encoders.towers.audio import encode_whisper_frames

LORA_TARGETS = ["q_proj", "v_proj", "out_proj", "fc1", "fc2"]


def pretrained_tower(mode: str = "lora", **overrides) -> TowerConfig:
    values = dict(
        kind="audio",
        pretrained=WHISPER_TINY_EN,
        audio_arch="whisper",
        whisper_input="longest",
        max_source_positions=150,
        lora=LoraSettings(mode=mode, r=4, alpha=8, dropout=0.0, target_modules=LORA_TARGETS),
    )
    values.update(overrides)
    return TowerConfig(**values)


def speech(n_samples: int, seed: int) -> torch.Tensor:
    return 0.1 * torch.randn(1, n_samples, generator=torch.Generator().manual_seed(seed))


def test_pretrained_tower_loads_the_packaged_whisper_offline():
    from encoders.pretrained.ctranslate2_spec import read_model_spec
    from encoders.pretrained.whisper import package_model_dir

    tower = build_tower(pretrained_tower("frozen")).eval()
    encoder = tower.base_model
    assert type(encoder).__name__ == "WhisperEncoder" and tower.hidden_size == 384
    assert len(encoder.layers) == 4 and encoder.embed_positions.num_embeddings == 1500
    spec = read_model_spec(package_model_dir() / "model.bin")
    expected = torch.from_numpy(spec.variables["encoder/conv1/weight"].astype("float32"))
    torch.testing.assert_close(encoder.conv1.weight.detach(), expected, atol=0, rtol=0)
    assert tower.log_mel.n_frames == 300  # max_source_positions=150 positions: a 3 s speech crop


def test_pretrained_none_keeps_the_from_scratch_tower():
    config = pretrained_tower("full", pretrained="none", hidden_size=32, num_layers=1, num_heads=2)
    assert config.pretrained is None
    tower = build_tower(config)
    assert tower.hidden_size == 32 and tower.base_model.embed_positions.num_embeddings == 150


def test_lora_is_all_that_trains_in_the_encoder_besides_the_projection():
    model = MultimodalModel(MultimodalConfig(towers={"audio": pretrained_tower("lora")}, embed_dim=32))
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    in_tower = {name for name in trainable if name.startswith("towers.audio.")}
    assert in_tower and all("lora_" in name for name in in_tower)
    for target in LORA_TARGETS:
        assert any(f".{target}.lora_A" in name for name in in_tower), target
    assert any(name.startswith("heads.audio.") for name in trainable)
    assert trainable - in_tower == {
        name for name in trainable if name.startswith("heads.") or name == "logit_scale"
    }


def test_gradients_reach_the_lora_adapters():
    tower = build_tower(pretrained_tower("lora")).train()
    waveform = torch.cat([speech(8000, 1), speech(8000, 2)])
    tower(waveform, lengths=torch.tensor([8000, 5000])).pow(2).sum().backward()
    lora = {name: param for name, param in tower.named_parameters() if param.requires_grad}
    assert lora and all(
        param.grad is not None and torch.isfinite(param.grad).all() for param in lora.values()
    )
    # LoRA's B starts at zero (Hu et al. 2021, Sec. 4.1), so B is where the first gradient lands.
    assert all(param.grad.abs().sum() > 0 for name, param in lora.items() if "lora_B" in name)


def test_an_utterance_encodes_the_same_alone_and_padded_in_a_batch():
    tower = build_tower(pretrained_tower("lora")).eval()
    short = speech(6000, 3)
    with torch.no_grad():
        alone = tower(short)
        batch = torch.cat([torch.cat([short, 5 * speech(10000, 4)], dim=1), speech(16000, 5)])
        batched = tower(batch, lengths=torch.tensor([6000, 16000]))
        # ...and the valid samples are information: counting the junk as speech changes the embedding.
        with_junk = tower(batch[:1])
    torch.testing.assert_close(batched[:1], alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(with_junk, alone, atol=1e-3)


def test_the_encoder_reads_the_longest_utterance_and_its_silence_not_a_30_s_window():
    tower = build_tower(pretrained_tower("frozen")).eval()
    seen: list[tuple[int, ...]] = []
    tower.base_model.conv1.register_forward_hook(lambda _m, args, _out: seen.append(tuple(args[0].shape)))
    with torch.no_grad():
        tower(torch.cat([speech(8000, 6), speech(8000, 7)]), lengths=torch.tensor([8000, 4000]))
        tower(speech(24000, 8))  # 1.5 s, inside the 3 s crop
        tower(speech(64000, 9))  # 4 s, cropped to 3 s
    # 10 ms frames of speech + 0.5 s of silence (whisper_silence_s), rounded up to the conv's stride 2.
    assert seen == [(2, 80, 100), (1, 80, 200), (1, 80, 350)]


def test_with_every_frame_valid_the_encoder_equals_transformers_whisper_encoder():
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    config = WhisperConfig(
        num_mel_bins=80,
        max_source_positions=8,
        d_model=32,
        encoder_layers=2,
        encoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=64,
    )
    encoder = WhisperEncoder(config).eval()
    features = torch.randn(2, 80, 16)
    with torch.no_grad():
        expected = encoder(features).last_hidden_state
        torch.testing.assert_close(encode_whisper_frames(encoder, features, torch.tensor([16, 16])), expected)


def test_a_lora_tuned_packaged_tower_saves_only_its_adapter_and_reloads(tmp_path):
    tower = build_tower(pretrained_tower("lora")).eval()
    with torch.no_grad():
        for name, param in tower.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.02)  # a trained adapter, not the identity
    tower.save(tmp_path)
    assert (tmp_path / "adapter" / "adapter_config.json").is_file() and not (tmp_path / "base").exists()
    reloaded = load_tower(tower.config, tmp_path).eval()
    waveform = torch.cat([speech(8000, 10), speech(8000, 11)])
    lengths = torch.tensor([8000, 3000])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(waveform, lengths=lengths), tower(waveform, lengths=lengths))


@pytest.mark.parametrize("silence_s", [-0.1])
def test_negative_silence_is_refused(silence_s):
    with pytest.raises(ValueError, match="whisper_silence_s"):
        pretrained_tower(whisper_silence_s=silence_s)
