"""Deterministic augmentation: a sample's draw depends only on (seed, epoch, index), never on the batch."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from edgekd.data.augment import Augmentation, augment_batch
from edgekd.errors import UserError


def _images(n: int, channels: int = 1, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def _offset(original: torch.Tensor, shifted: torch.Tensor, pad: int) -> tuple[int, int] | None:
    """The (dy, dx) in [-pad, pad] with shifted == original translated by it, or None."""
    padded = F.pad(original, (pad, pad, pad, pad))
    height, width = original.shape[-2:]
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            if torch.equal(padded[..., dy : dy + height, dx : dx + width], shifted):
                return dy - pad, dx - pad
    return None


def test_a_sample_is_augmented_the_same_whatever_its_batch():
    x, index = _images(40), torch.arange(100, 140)
    whole = augment_batch(x, index, epoch=3, seed=7)
    order = torch.randperm(40, generator=torch.Generator().manual_seed(1))
    for part in (order[:5], order[5:23], order[23:]):
        assert torch.equal(augment_batch(x[part], index[part], epoch=3, seed=7), whole[part])
    single = augment_batch(x[11:12], index[11:12], epoch=3, seed=7)
    assert torch.equal(single, whole[11:12])


def test_epoch_and_seed_change_the_draw_and_the_same_triple_repeats_it():
    x, index = _images(64), torch.arange(64)
    base = augment_batch(x, index, epoch=0, seed=0)
    assert torch.equal(base, augment_batch(x.clone(), index, epoch=0, seed=0))
    for other in (augment_batch(x, index, epoch=1, seed=0), augment_batch(x, index, epoch=0, seed=1)):
        differs = (other != base).flatten(1).any(1)
        # 9 equally likely offsets at 1 px: about 1 in 9 samples repeats by chance.
        assert differs.float().mean() > 0.6


def test_shift_is_a_translation_within_the_limit_and_covers_it():
    x, index = _images(300, size=16), torch.arange(300)
    out = augment_batch(x, index, epoch=2, seed=5, shift_px=2)
    offsets = [_offset(x[i], out[i], 2) for i in range(len(x))]
    assert None not in offsets
    seen_dy = {dy for dy, _ in offsets}
    seen_dx = {dx for _, dx in offsets}
    assert seen_dy == seen_dx == set(range(-2, 3))
    counts = torch.bincount(torch.tensor([dy + 2 for dy, _ in offsets]), minlength=5).float()
    assert counts.min() > 300 / 5 * 0.6  # roughly uniform, not stuck on one offset


def test_hflip_flips_about_half_and_only_when_asked():
    x, index = _images(400, channels=3, size=6), torch.arange(400)
    assert torch.equal(augment_batch(x, index, 0, 0, shift_px=0), x)  # default: no flip
    out = augment_batch(x, index, 0, 0, shift_px=0, hflip=True)
    flipped = (out == x.flip(3)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert bool((flipped | kept).all())
    assert 0.4 < flipped.float().mean().item() < 0.6


@pytest.mark.parametrize("size, expected", [(8, 1), (28, 3), (32, 4), (224, 28), (4, 1)])
def test_automatic_shift_is_an_eighth_of_the_smaller_side(size, expected):
    assert Augmentation().resolved_shift_px(size, size + 5) == expected


def test_identity_and_bad_settings():
    assert Augmentation(shift_px=0).is_identity(8, 8)
    assert not Augmentation(shift_px=0, hflip=True).is_identity(8, 8)
    assert not Augmentation().is_identity(8, 8)
    with pytest.raises(UserError, match="shift_px"):
        Augmentation(shift_px=-1)
    with pytest.raises(ValueError, match="indices"):
        augment_batch(_images(3), torch.arange(2), 0, 0)


def test_dataclass_applies_the_same_as_the_function_and_keeps_dtype_and_shape():
    x, index = _images(10, channels=3, size=12).double(), torch.arange(10)
    aug = Augmentation(seed=3, shift_px=2, hflip=True)
    out = aug.apply(x, index, 4)
    assert out.dtype == torch.float64 and out.shape == x.shape
    assert torch.equal(out, augment_batch(x, index, 4, 3, shift_px=2, hflip=True))
    assert aug.to_dict() == {"seed": 3, "shift_px": 2, "hflip": True}


# ---- random-resized-crop ------------------------------------------------------------------------

def test_random_resized_crop_is_a_pure_function_of_seed_epoch_and_index():
    from edgekd.data.augment import Augmentation

    x = torch.rand(6, 3, 16, 16)
    index = torch.arange(10, 16)
    augmentation = Augmentation(seed=3, crop_scale=(0.2, 1.0), hflip=True)
    once = augmentation.apply(x, index, epoch=1)
    # the same samples in another batch order: each gets the same crop
    order = torch.tensor([5, 2, 0, 4, 1, 3])
    assert torch.allclose(augmentation.apply(x[order], index[order], epoch=1), once[order], atol=1e-6)
    assert not torch.allclose(augmentation.apply(x, index, epoch=2), once)  # a new crop each epoch
    assert once.shape == x.shape and augmentation.resolved_shift_px(16, 16) == 0


def test_a_full_area_crop_of_square_ratio_is_the_image():
    from edgekd.data.augment import random_resized_crop

    x = torch.rand(4, 1, 12, 12)
    out = random_resized_crop(x, torch.arange(4), 0, seed=0, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.allclose(out, x, atol=1e-5)


def test_crop_scale_is_checked_when_the_recipe_is_read():
    from edgekd.config import load_recipe
    from edgekd.errors import UserError

    with pytest.raises(UserError, match=r"distill.augment_crop_scale must be \[min, max\]"):
        load_recipe(None, ["distill.augment_crop_scale=[0.9, 0.2]"])
