"""paec.training.advantages: group normalisation and zero-variance groups, by hand."""

from __future__ import annotations

import pytest
import torch

from paec.training.advantages import group_advantages


def test_group_normalised_by_hand() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    adv, flat = group_advantages(rewards, 4, eps=0.0)
    # group 1: mean 0.5, sample std sqrt(1/3) -> +-0.5 / 0.57735 = +-0.8660
    s = 0.5 / (1 / 3) ** 0.5
    torch.testing.assert_close(adv[:4], torch.tensor([s, -s, -s, s]))
    assert adv[4:].tolist() == [0.0] * 4  # equal rewards: exactly zero
    assert flat.tolist() == [False, True]


def test_without_std_normalisation_only_centres() -> None:
    adv, _ = group_advantages(torch.tensor([3.0, 1.0]), 2, normalize_std=False)
    assert adv.tolist() == [1.0, -1.0]


def test_shape_is_checked() -> None:
    with pytest.raises(ValueError, match=r"\(P \* 3,\)"):
        group_advantages(torch.zeros(4), 3)
