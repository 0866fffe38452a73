"""Evaluation library: prompt sets and zero-shot scoring, metrics, calibration, prompt weighting
(ZPE), explanations and the HTML report. Pure functions over arrays; the stage is pipelines/evaluate.py."""
