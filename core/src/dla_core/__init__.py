"""dla_core: the shared core of the dla toolkit.

Modules: ``data`` (datasets in memory as uint8 tensors, batched augmentation), ``models`` (MLP/CNN families and
their registry), ``engine`` (the one Accelerate training loop), ``runs`` (run folders, atomic checkpoints),
``plots`` (matplotlib figures) and ``cli`` (shared click options and the one error style).
"""

__version__ = "0.1.0"
