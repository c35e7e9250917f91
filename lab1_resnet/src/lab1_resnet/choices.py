"""The names lab1's commands offer, without heavy imports: the CLI reads them at start-up (no torch there).

The experiment modules use the same tuples (``transfer.FROZEN_PARTS`` is keyed by ``STRATEGIES``, in order).
"""

FAMILIES = ("mlp", "cnn")
KINDS = ("plain", "residual")  # the depth study's nets: without and with the skips
STRATEGIES = ("head", "freeze-stem", "freeze-early", "none")  # transfer: what stays frozen while fine-tuning
OPTIMIZERS = ("sgd", "adam", "adamw")
