"""The packaged Whisper tiny.en (CTranslate2 format) converts into a standard, verified Hugging Face directory
that encodes and transcribes like the original."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

from encoders.pretrained.ctranslate2_spec import SpecFormatError, read_model_spec
from encoders.pretrained.whisper import (
    RECORD,
    WEIGHTS,
    load_package_model,
    package_model_dir,
    sha256_file,
    whisper_state_dict,
    whisper_tiny_en_dir,
)


def vowel_signal() -> np.ndarray:
    """1 s of a synthetic vowel (harmonics of a rising 120-160 Hz pitch shaped by three formants), 16 kHz.

    Pure arithmetic, so the same on every machine: the input of the recorded encoder digest below.
    """
    t = np.arange(16000) / 16000.0
    f0 = 120.0 + 40.0 * t
    phase = 2 * np.pi * np.cumsum(f0) / 16000.0
    formants = [(700.0, 1.0), (1200.0, 0.5), (2600.0, 0.25)]
    wave = sum(
        np.sin(k * phase) * sum(a / (1 + ((k * f0 - f) / 150.0) ** 2) for f, a in formants)
        for k in range(1, 30)
    )
    envelope = np.sin(np.pi * t) ** 2
    return (0.3 * envelope * wave / np.abs(wave).max()).astype(np.float32)


def vowel_features() -> np.ndarray:
    """Whisper's own 30 s log-mel window of :func:`vowel_signal` [1, 80, 3000]."""
    extractor = WhisperFeatureExtractor(feature_size=80)
    return extractor(vowel_signal(), sampling_rate=16000, return_tensors="np").input_features


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return whisper_tiny_en_dir(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def whisper(converted: Path) -> WhisperForConditionalGeneration:
    return WhisperForConditionalGeneration.from_pretrained(converted).eval()


def test_every_packaged_variable_maps_onto_transformers_whisper_strictly():
    spec = read_model_spec(package_model_dir() / "model.bin")
    assert spec.name == "WhisperSpec" and len(spec.variables) == 148
    assert spec.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    model, tokenizer, _ = load_package_model()  # load_state_dict(strict=True) inside
    config = model.config
    assert (config.d_model, config.encoder_layers, config.decoder_layers) == (384, 4, 4)
    assert (config.encoder_attention_heads, config.encoder_ffn_dim, config.num_mel_bins) == (6, 1536, 80)
    assert config.vocab_size == 51864 and config.max_source_positions == 1500
    state = whisper_state_dict(spec, config)
    assert set(state) == set(model.state_dict())
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    # The stored key bias is zero and dropped; the fused q,k,v rows land in order.
    fused = spec.variables["encoder/layer_2/self_attention/linear_0/weight"]
    layer = model.model.encoder.layers[2].self_attn
    np.testing.assert_array_equal(layer.k_proj.weight.detach().numpy(), fused[384:768].astype(np.float32))
    np.testing.assert_array_equal(layer.v_proj.weight.detach().numpy(), fused[768:].astype(np.float32))
    assert tokenizer.convert_tokens_to_ids("<|startoftranscript|>") == config.decoder_start_token_id


def test_a_truncated_spec_is_refused(tmp_path):
    truncated = tmp_path / "model.bin"
    truncated.write_bytes((package_model_dir() / "model.bin").read_bytes()[:4096])
    with pytest.raises(SpecFormatError, match="truncated"):
        read_model_spec(truncated)


def test_conversion_writes_a_standard_directory_recorded_by_hash(converted, whisper):
    for name in (
        "config.json",
        "generation_config.json",
        WEIGHTS,
        "tokenizer.json",
        "preprocessor_config.json",
    ):
        assert (converted / name).is_file(), name
    record = json.loads((converted / RECORD).read_text())
    assert record["source_sha256"] == sha256_file(package_model_dir() / "model.bin")
    assert record["safetensors_sha256"] == sha256_file(converted / WEIGHTS)
    processor = WhisperProcessor.from_pretrained(converted)
    assert processor.feature_extractor.feature_size == 80
    assert (
        processor.tokenizer.decode([50257, 50362, 31373, 995, 50256], skip_special_tokens=True)
        == "hello world"
    )
    assert whisper.generation_config.no_timestamps_token_id == 50362


def test_second_call_reuses_the_verified_directory(converted):
    before = (converted / WEIGHTS).stat().st_mtime_ns
    assert whisper_tiny_en_dir(converted.parent) == converted
    assert (converted / WEIGHTS).stat().st_mtime_ns == before


@pytest.mark.parametrize("damage", ["half_written_weights", "missing_record"])
def test_a_damaged_cache_is_rebuilt(converted, tmp_path, damage):
    target = tmp_path / converted.name
    shutil.copytree(converted, target)
    if damage == "half_written_weights":
        with open(target / WEIGHTS, "r+b") as handle:
            handle.truncate(os.path.getsize(target / WEIGHTS) // 2)
    else:
        (target / RECORD).unlink()
    assert whisper_tiny_en_dir(tmp_path) == target
    assert sha256_file(target / WEIGHTS) == json.loads((converted / RECORD).read_text())["safetensors_sha256"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, f"{target.name}.lock"])


def encode(whisper: WhisperForConditionalGeneration, features: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return whisper.model.encoder(torch.from_numpy(features)).last_hidden_state[0].numpy()


def test_encoder_matches_ctranslate2_on_the_same_features(whisper):
    ctranslate2 = pytest.importorskip("ctranslate2")
    features = np.ascontiguousarray(vowel_features())
    reference = ctranslate2.models.Whisper(str(package_model_dir()), device="cpu", compute_type="float32")
    expected = np.array(reference.encode(ctranslate2.StorageView.from_array(features), to_cpu=True))[0]
    np.testing.assert_allclose(encode(whisper, features), expected, atol=2e-4, rtol=0)


def test_encoder_matches_the_recorded_ctranslate2_digest(whisper):
    # Recorded from ctranslate2 4.8.5's Whisper.encode (float32, CPU) on vowel_features(), rounded to 5
    # decimals; the converted encoder agreed with it within 2.3e-5. Holds where ctranslate2 is absent.
    out = encode(whisper, vowel_features())
    speech_mean = [0.71325, 0.71247, -0.11107, 0.95584, -0.10331, 0.92296, 0.36886, -0.77439]
    np.testing.assert_allclose(out[:50].mean(axis=0)[:8], speech_mean, atol=2e-4, rtol=0)
    np.testing.assert_allclose(
        out[10, :6], [1.43661, 1.14724, -0.08751, 0.73763, -0.45605, 1.25093], atol=2e-4
    )
    np.testing.assert_allclose(
        out[1499, :6], [-0.1497, -0.24223, -0.13663, 0.84532, -1.73975, -0.3164], atol=2e-4
    )


@pytest.mark.slow  # about 4 s of CPU: three 30 s encoder windows and a few decoding steps
def test_greedy_transcription_of_fsdd_digits(whisper, converted, shared_data):
    import soundfile as sf
    import torchaudio

    # Three speakers; files Whisper tiny.en (and CTranslate2, identically) transcribes as the digit word.
    expected = {"1_george_0.wav": "one", "0_jackson_0.wav": "zero", "5_lucas_0.wav": "five"}
    waves = []
    for name in expected:
        audio, fs_hz = sf.read(shared_data / "fsdd" / "recordings" / name, dtype="float32")
        waves.append(torchaudio.functional.resample(torch.from_numpy(audio), fs_hz, 16000).numpy())
    processor = WhisperProcessor.from_pretrained(converted)
    features = processor.feature_extractor(waves, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        tokens = whisper.generate(features, max_new_tokens=6)
    words = [
        t.strip().strip(".!?,").lower() for t in processor.batch_decode(tokens, skip_special_tokens=True)
    ]
    assert words == list(expected.values())
