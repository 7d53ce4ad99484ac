"""A pruned model rebuilt from its saved weights alone: the unpruned architecture narrowed to the
state dict's shapes computes what the pruned model computes, for every block pattern (residual,
inverted residual with squeeze-excitation, concatenation, grouped and depthwise convolutions)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "prune"))
from prune_patterns import pattern_models, randomise_batch_norm_  # noqa: E402

from edgekd.errors import UserError  # noqa: E402
from edgekd.models.resize import narrow_to_state_dict_  # noqa: E402
from edgekd.prune.channels import prune_channels  # noqa: E402

EXAMPLE = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("pattern", list(pattern_models()))
def test_the_unpruned_architecture_narrowed_to_pruned_weights_is_the_pruned_model(pattern, tmp_path):
    model = randomise_batch_norm_(pattern_models()[pattern])
    pruned = prune_channels(model, EXAMPLE, channel_multiple=8, ratio=0.5).model.eval()
    torch.save(pruned.state_dict(), tmp_path / "pruned.pt")
    state = torch.load(tmp_path / "pruned.pt", weights_only=True)
    rebuilt = narrow_to_state_dict_(pattern_models()[pattern], state).eval()
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), pruned(x))
    for name, layer in rebuilt.named_modules():
        if isinstance(layer, nn.Conv2d):
            twin = pruned.get_submodule(name)
            assert (layer.in_channels, layer.out_channels, layer.groups) == (twin.in_channels, twin.out_channels,
                                                                            twin.groups)


def test_a_layer_it_cannot_narrow_is_named():
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.Embedding(10, 4))
    state = {**model.state_dict(), "1.weight": torch.zeros(10, 2)}
    with pytest.raises(UserError, match="1 .Embedding."):
        narrow_to_state_dict_(model, state)
