"""Evaluation library: what a model is judged by, shared by every stage that judges one.

Public, by module (import from the module; this package imports nothing so that ``pipelines.training``
can use the metrics without a cycle):

- ``zero_shot``: ``ZeroShotClassifier`` (prompt ensembles, ZPE weights, pair and multi-class modes,
  calibration temperature; ``state``/``from_state`` travel with a registered model),
  ``ZeroShotScoringConfig``, ``TaskPrompts``, ``task_prompts``, ``encode_prompts``, ``evaluate_task``,
  ``evaluate_tasks``, ``task_metric_names``, ``linear_probe_rows``
- ``tasks``: ``ZeroShotTaskConfig``, ``default_zero_shot_tasks``, ``task_prompt_texts``,
  ``resolve_classes``
- ``embeddings``: ``SplitEmbeddings``, ``embed_split``
- ``retrieval``: ``retrieval_and_gap``, ``mean_r_at_1``, ``study_top1_hits``
- ``task_sequence``: continual learning's ``EvalSet``, ``evaluate_state``, ``task_row``
- ``metrics``: classification with bootstrap CIs, ``retrieval_recall``/``retrieval_both_directions``
  (the one R@k), ``l2_normalise``, modality gap, linear probe
- ``real_data``: the evidence stage's scoring of public recordings and its Markdown summary
- ``calibration``, ``zpe``, ``prompts`` (prompt sets), ``explain``, ``report`` (HTML)

The stages using it are ``pipelines/evaluate.py``, ``continual.py``, ``unlearn.py`` and ``evidence.py``;
the served model (``pipelines/registry/pyfunc.py``) scores with the same ``ZeroShotClassifier``.
"""
