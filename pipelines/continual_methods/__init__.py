"""Continual-learning methods used by the ``continual`` stage: rehearsal buffer and supervised contrastive
replay (``replay``), ZSCL reference distillation (``distill``), weight ensembling and L2-init (``weights``),
and the forgetting metrics (``metrics``)."""
