"""The mark of the GPU tests: each part's ``test_gpu.py`` runs only where CUDA is available (CI has none)."""

from __future__ import annotations

import pytest
import torch

needs_gpu = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
