"""The names lab2's commands offer, without heavy imports: the CLI reads them at start-up (no torch there).

``models.py`` uses the same tuples (it imports them from here).
"""

STRATEGIES = ("full", "head", "head+last")  # finetune: which weights train
LORA_ROLES = ("q", "k", "v", "o", "ffn")  # lora --targets, mapped per architecture in models.LORA_MODULES
ALL_LINEAR = "all-linear"  # lora --targets all-linear: every role above (each linear layer of the blocks)
