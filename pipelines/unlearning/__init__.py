"""Unlearning: forget list -> samples (``resolve``), data purge (``purge``), model unlearning
(``methods``), verification (``verify``) and the append-only audit log (``audit``). The stage that
strings them together is ``pipelines/unlearn.py``."""
