"""Whisper tiny.en as a spoken-digit recogniser on its own: the baselines the FSDD evidence holds its
zero-shot speech tower against, on the same test files.

Both baselines read each file the way Whisper is meant to be used: the raw recording resampled to
16 kHz, Whisper's own feature extractor (log-mel, padded to its 30 s window), the full encoder, and the
packaged decoder prompt ``<|startoftranscript|><|notimestamps|>`` (tiny.en has no language or task
token). The encoder runs once per file; both baselines read its output.

greedy       ``generate`` with the packaged generation config (greedy, its suppressed tokens), at most
             ``MAX_NEW_TOKENS`` tokens; the text is right when it is exactly one word that is the digit's
             word or numeral, case and punctuation aside (:func:`digit_of_text`): "Seven." and "7" count,
             "Oh." for zero, "Seventy" and "seven seven" do not.
best-of-ten  At the first decoding step, the digit whose word is most probable as the transcript's
             start. A word's probability is the sum over its surface forms of each form's whole token
             sequence probability (teacher-forced, so a word split into several tokens is scored on all of
             them): with and without a leading space, lower case and capitalised (" Seven", " seven",
             "Seven", "seven"); Whisper writes " Seven." for a lone word, and summing the forms stops a
             tokenisation choice from deciding the digit. No end-of-text or punctuation is required after
             the word. ``best_of_ten_numerals`` also adds the numeral forms (" 7", "7"): the most generous
             reading of Whisper, reported beside the words-only figure the issue defines.

The scores are the raw log-softmax of the decoder (no suppressed tokens), so a restricted vocabulary
(:func:`best_of`, e.g. the three held-out digits) is an argmax over the same per-file scores.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
WHISPER_FS_HZ = 16000
MAX_NEW_TOKENS = 8  # "Seven." is 2 tokens; a lone word never needs 8


def digit_of_text(text: str) -> int | None:
    """The digit a transcript names when it is exactly one digit word or numeral, else None."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    if len(words) != 1:
        return None
    word = words[0]
    if word in DIGIT_WORDS:
        return DIGIT_WORDS.index(word)
    return int(word) if len(word) == 1 and word.isdigit() else None


def word_forms(digit: int, numerals: bool = False) -> list[str]:
    """The surface forms whose probabilities sum to the digit's (see the module docstring)."""
    word = DIGIT_WORDS[digit]
    forms = [f" {word.capitalize()}", f" {word}", word.capitalize(), word]
    return forms + ([f" {digit}", str(digit)] if numerals else [])


@dataclasses.dataclass
class WhisperDigits:
    """Per-file outputs of Whisper on a list of recordings (rows in the order given)."""

    transcripts: list[str]
    greedy: np.ndarray  # [n] digit of the greedy transcript, -1 where it names none
    word_logprob: np.ndarray  # [n, 10] log P(digit's word forms) at the first decoding step
    numeral_logprob: np.ndarray  # [n, 10] log P(word or numeral forms)

    def best_of(self, digits: Sequence[int], numerals: bool = False) -> np.ndarray:
        """The most probable of ``digits`` per file (the digit itself, not its position)."""
        scores = (self.numeral_logprob if numerals else self.word_logprob)[:, list(digits)]
        return np.asarray(digits)[np.argmax(scores, axis=1)]


class WhisperDigitScorer:
    """Whisper (a converted Hugging Face directory) with the tokenised digit forms, ready to score."""

    def __init__(self, model_dir: str | Path, batch_size: int = 16) -> None:
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        self.model = WhisperForConditionalGeneration.from_pretrained(model_dir).eval()
        self.processor = WhisperProcessor.from_pretrained(model_dir)
        self.batch_size = batch_size
        self._done: dict[str, tuple[str, int, np.ndarray, np.ndarray]] = {}
        generation = self.model.generation_config
        self.prefix = [generation.decoder_start_token_id, generation.no_timestamps_token_id]
        tokenizer = self.processor.tokenizer
        # (digit, is_numeral, token ids) for every surface form.
        self.forms = [
            (digit, form.strip().isdigit(), tokenizer.encode(form, add_special_tokens=False))
            for digit in range(10)
            for form in word_forms(digit, numerals=True)
        ]

    def score_files(self, paths: Sequence[str | Path]) -> WhisperDigits:
        """:meth:`score` of recordings read from ``paths``; a file scored before is not scored again
        (the held-out-digits test files are the speaker folds' files again)."""
        keys = [str(Path(p).resolve()) for p in paths]
        todo = list(dict.fromkeys(k for k in keys if k not in self._done))
        if todo:
            fresh = self.score([read_wave_16k(k) for k in todo])
            for i, key in enumerate(todo):
                self._done[key] = (
                    fresh.transcripts[i],
                    fresh.greedy[i],
                    fresh.word_logprob[i],
                    fresh.numeral_logprob[i],
                )
        rows = [self._done[k] for k in keys]
        return WhisperDigits(
            [r[0] for r in rows],
            np.array([r[1] for r in rows], dtype=int),
            np.array([r[2] for r in rows]).reshape(-1, 10),
            np.array([r[3] for r in rows]).reshape(-1, 10),
        )

    def features(self, waves: list[np.ndarray]) -> torch.Tensor:
        return self.processor.feature_extractor(
            waves, sampling_rate=WHISPER_FS_HZ, return_tensors="pt"
        ).input_features

    @torch.no_grad()
    def _form_logprobs(self, encoder_states: torch.Tensor) -> torch.Tensor:
        """[batch, forms] log-probability of each form's whole token sequence after the prefix.

        Every token is scored in its context (prefix + the form's earlier tokens); forms sharing a
        context (all single-token forms share the bare prefix) read one decoder pass.
        """
        contexts = sorted(
            {tuple(self.prefix + ids[:j]) for _, _, ids in self.forms for j in range(len(ids))}, key=len
        )
        where = {context: k for k, context in enumerate(contexts)}
        width = len(contexts[-1])
        # Right padding: causal attention keeps it out of the real positions, which are read by index.
        inputs = torch.full((len(contexts), width), self.prefix[0], dtype=torch.long)
        for k, context in enumerate(contexts):
            inputs[k, : len(context)] = torch.tensor(context)
        last = torch.tensor([len(context) - 1 for context in contexts])
        batch = encoder_states.shape[0]
        hidden = self.model.model.decoder(
            input_ids=inputs.repeat(batch, 1),
            encoder_hidden_states=encoder_states.repeat_interleave(len(contexts), dim=0),
        ).last_hidden_state.reshape(batch, len(contexts), width, -1)
        hidden = hidden[:, torch.arange(len(contexts)), last]  # [batch, contexts, d_model]
        logprobs = torch.log_softmax(self.model.proj_out(hidden).float(), dim=-1)
        columns = []
        for _, _, ids in self.forms:
            steps = [logprobs[:, where[tuple(self.prefix + ids[:j])], token] for j, token in enumerate(ids)]
            columns.append(torch.stack(steps, dim=1).sum(dim=1))
        return torch.stack(columns, dim=1)

    @torch.no_grad()
    def score(self, waves: list[np.ndarray]) -> WhisperDigits:
        """Greedy transcripts and digit scores of 16 kHz mono ``waves``."""
        from transformers.modeling_outputs import BaseModelOutput

        transcripts: list[str] = []
        form_scores = []
        for start in range(0, len(waves), self.batch_size):
            features = self.features(waves[start : start + self.batch_size])
            states = self.model.model.encoder(features).last_hidden_state
            tokens = self.model.generate(
                encoder_outputs=BaseModelOutput(last_hidden_state=states),
                max_new_tokens=MAX_NEW_TOKENS,
                do_sample=False,
                num_beams=1,
            )
            transcripts += self.processor.batch_decode(tokens, skip_special_tokens=True)
            form_scores.append(self._form_logprobs(states))
        scores = torch.cat(form_scores).numpy() if form_scores else np.zeros((0, len(self.forms)))
        digit = np.array([d for d, _, _ in self.forms])
        numeral = np.array([n for _, n, _ in self.forms])
        word_lp = np.stack([_logsumexp(scores[:, (digit == d) & ~numeral]) for d in range(10)], axis=1)
        any_lp = np.stack([_logsumexp(scores[:, digit == d]) for d in range(10)], axis=1)
        greedy = np.array([-1 if (d := digit_of_text(t)) is None else d for t in transcripts], dtype=int)
        return WhisperDigits(transcripts, greedy, word_lp.reshape(-1, 10), any_lp.reshape(-1, 10))


def _logsumexp(values: np.ndarray) -> np.ndarray:
    """Row-wise log(sum(exp)) of [n, k] log-probabilities."""
    peak = values.max(axis=1, keepdims=True) if values.size else np.zeros((values.shape[0], 1))
    return (peak + np.log(np.exp(values - peak).sum(axis=1, keepdims=True)))[:, 0]


def read_wave_16k(path: str | Path) -> np.ndarray:
    """A recording as 16 kHz mono float32 (channels averaged), the rate Whisper's front end assumes."""
    import soundfile as sf
    import torchaudio

    audio, fs_hz = sf.read(str(path), dtype="float32", always_2d=True)
    mono = torch.from_numpy(audio.mean(axis=1))
    if fs_hz != WHISPER_FS_HZ:
        mono = torchaudio.functional.resample(mono, fs_hz, WHISPER_FS_HZ)
    return mono.numpy()
