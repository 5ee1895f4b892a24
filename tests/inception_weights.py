"""A random-weights Inception file, for the FID tests that load one (no network access to fetch the real one)."""

from __future__ import annotations

import torch
from torch import nn

from dsgan.eval.inception import FIDInceptionV3


def random_inception_weights(path, drop_num_batches_tracked: bool = False) -> dict[str, torch.Tensor]:
    """He-initialised convolutions so activations stay O(1) through the 90-odd layers (PyTorch's default init
    shrinks them to ~1e-8, too small to exercise anything)."""
    torch.manual_seed(0)
    model = FIDInceptionV3()
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    state = model.state_dict()
    if drop_num_batches_tracked:
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(state, path)
    return state
