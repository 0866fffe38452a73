"""Whisper tiny.en's own digit baselines: the transcript reading, the word scoring, real FSDD files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encoders.pretrained.whisper import whisper_tiny_en_dir
from pipelines.evaluation.whisper_digits import (
    WhisperDigits,
    WhisperDigitScorer,
    digit_of_text,
    read_wave_16k,
    word_forms,
)


@pytest.mark.parametrize(
    ("text", "digit"),
    [(" Seven.", 7), ("zero", 0), (" 8", 8), ("NINE!", 9), (" Hey.", None), ("Oh.", None)]
    + [(" seven seven", None), (" Seventy.", None), (" 17", None), ("", None)],
)
def test_a_transcript_names_a_digit_only_as_one_word_or_numeral(text, digit):
    assert digit_of_text(text) == digit


def test_word_forms_cover_space_and_case_and_numerals_on_request():
    assert word_forms(3) == [" Three", " three", "Three", "three"]
    assert word_forms(3, numerals=True)[-2:] == [" 3", "3"]


def test_best_of_restricts_the_choice_to_the_given_digits():
    scores = np.log(np.full((2, 10), 0.01))
    scores[0, [2, 8]] = np.log([0.5, 0.3])  # 2 wins overall, 8 among 7-9
    scores[1, 7] = np.log(0.4)
    result = WhisperDigits(["", ""], np.array([-1, -1]), scores, scores)
    assert result.best_of(range(10)).tolist() == [2, 7]
    assert result.best_of([7, 8, 9]).tolist() == [8, 7]


@pytest.fixture(scope="module")
def scorer() -> WhisperDigitScorer:
    return WhisperDigitScorer(whisper_tiny_en_dir(), batch_size=4)


@pytest.mark.slow  # six 30 s encoder windows, a few seconds of CPU
def test_greedy_and_best_of_ten_on_real_fsdd_files(scorer, shared_data):
    recordings = shared_data / "fsdd" / "recordings"
    # Whisper tiny.en writes " one." and " Five." for these, and " 7" (a numeral) for 7_nicolas_3; it
    # mishears 8_george_10 as " Hey." though eight is its most probable digit word.
    names = ["1_george_0.wav", "0_jackson_0.wav", "5_lucas_0.wav", "7_nicolas_3.wav", "8_george_10.wav"]
    result = scorer.score_files([recordings / n for n in names])
    assert result.greedy.tolist() == [1, 0, 5, 7, -1]
    assert result.best_of(range(10)).tolist() == [1, 0, 5, 7, 8]
    assert result.best_of(range(10), numerals=True).tolist() == [1, 0, 5, 7, 8]
    # A word's probability sums its forms: never below its most probable form, never above 1.
    assert np.all(result.word_logprob <= 0) and np.all(result.numeral_logprob >= result.word_logprob)
    # A file scored before is served from the cache, row for row.
    again = scorer.score_files([recordings / names[2], recordings / names[0]])
    np.testing.assert_array_equal(again.word_logprob, result.word_logprob[[2, 0]])


@pytest.mark.slow
def test_multi_token_forms_score_their_whole_sequence(scorer, shared_data):
    # Every digit form is one token in Whisper's vocabulary, so score multi-token phrases against the
    # model's own teacher-forced forward over the whole decoder input.
    tokenizer = scorer.processor.tokenizer
    phrases = [" Five point five", " Zero.", " Hello there"]
    forms = [(0, False, tokenizer.encode(p, add_special_tokens=False)) for p in phrases]
    assert max(len(ids) for _, _, ids in forms) >= 3
    wave = read_wave_16k(shared_data / "fsdd" / "recordings" / "5_lucas_0.wav")
    features = scorer.features([wave])
    with torch.no_grad():
        states = scorer.model.model.encoder(features).last_hidden_state
        scorer_forms, scorer.forms = scorer.forms, forms
        try:
            got = scorer._form_logprobs(states)[0]
        finally:
            scorer.forms = scorer_forms
        for k, (_, _, ids) in enumerate(forms):
            decoder_input = torch.tensor([scorer.prefix + ids[:-1]])
            logits = scorer.model(input_features=features, decoder_input_ids=decoder_input).logits[0]
            logprobs = torch.log_softmax(logits.float(), dim=-1)[len(scorer.prefix) - 1 :]
            expected = logprobs[torch.arange(len(ids)), torch.tensor(ids)].sum()
            torch.testing.assert_close(got[k], expected, atol=1e-4, rtol=0)
