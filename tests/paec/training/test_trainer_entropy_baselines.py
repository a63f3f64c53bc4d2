"""paec.training.trainer with the entropy baselines (CE-GPPO, ERC, EntroPIC, AEnt) end to end
on the tiny real model: each trains and logs its metrics, ERC compares against the pre-update
entropies of the no-grad pass, EntroPIC's controller survives a pause and resume, and the
`paec train --set loss.loss_type=...` command line selects them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from paec.cli import main as cli_main
from paec.config.loss import PolicyLossConfig, PolicyLossType
from paec.training.checkpoint import load_training_state
from paec.training.trainer import Trainer
from tests.paec.training.test_trainer import Recorder, config, params

# What each baseline must log (docs/metrics.md, "Entropy baselines").
LOGGED = {
    PolicyLossType.CE_GPPO: ("policy/dual_clip_frac", "policy/clip_frac_low"),
    PolicyLossType.ERC: ("policy/erc_kept_frac", "policy/entropy_ratio_mean"),
    PolicyLossType.ENTROPIC: ("policy/entropic_alpha", "policy/entropic_integral",
                              "policy/high_prob_frac", "loss/entropic"),
    PolicyLossType.AENT: ("entropy/clamped", "loss/clamped_entropy_bonus"),
}


@pytest.mark.slow
@pytest.mark.parametrize("loss_type", list(LOGGED))
def test_each_entropy_baseline_trains_the_tiny_model(tiny_dir: Path, tmp_path: Path,
                                                     loss_type: PolicyLossType) -> None:
    rec = Recorder()
    # update_epochs=2: off-policy ratios, so the clip branches and ERC's band can act.
    trainer = Trainer(config(tiny_dir, tmp_path, steps=2, use_paec=False, update_epochs=2,
                             loss=PolicyLossConfig(loss_type=loss_type)), [rec])
    before = params(trainer.model)
    assert trainer.train().status == "completed"
    after = params(trainer.model)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    for m in rec.metrics:
        assert "train/skipped" not in m
        for key in LOGGED[loss_type]:
            assert key in m, key
            assert m[key] == m[key], key  # not NaN
    if loss_type is PolicyLossType.AENT:
        assert rec.metrics[-1]["loss/clamped_entropy_bonus"] > 0
        # the clamped entropy of a distribution is at most log of what it keeps
        vocab = trainer.model.config.vocab_size
        assert 0 < rec.metrics[-1]["entropy/clamped"] <= torch.log(torch.tensor(
            vocab - int(vocab * 0.2))).item()


@pytest.mark.slow
def test_erc_first_epoch_ratio_is_one_and_the_second_moves(tiny_dir: Path,
                                                           tmp_path: Path) -> None:
    """With one epoch and no old pass, pi_old's entropy is the update's own (rho = 1, every
    token kept); with two, the second epoch compares against the no-grad pass's."""
    one = Recorder()
    Trainer(config(tiny_dir, tmp_path / "one", steps=1, use_paec=False,
                   loss=PolicyLossConfig(loss_type=PolicyLossType.ERC)), [one]).train()
    assert one.metrics[0]["policy/entropy_ratio_mean"] == 1.0
    assert one.metrics[0]["policy/erc_kept_frac"] == 1.0
    two = Recorder()
    # A random tiny model's entropy is near log V and moves little: a narrow band.
    narrow = PolicyLossConfig(loss_type=PolicyLossType.ERC, erc_low=1 - 1e-6, erc_high=1 + 1e-6)
    trainer = Trainer(config(tiny_dir, tmp_path / "two", steps=1, use_paec=False,
                             update_epochs=2, learning_rate=5e-2, loss=narrow), [two])
    assert trainer._needs_old_pass
    trainer.train()
    # averaged over the two epochs: in the first, pi_theta is pi_old (rho = 1, all kept)
    assert two.metrics[0]["policy/entropy_ratio_mean"] != pytest.approx(1.0, abs=1e-4)
    assert 0.5 <= two.metrics[0]["policy/erc_kept_frac"] < 1.0


@pytest.mark.slow
def test_entropic_controller_state_survives_pause_and_resume(tiny_dir: Path,
                                                             tmp_path: Path) -> None:
    loss = PolicyLossConfig(loss_type=PolicyLossType.ENTROPIC, entropic_target=0.5,
                            entropic_ki=0.1)
    straight = Recorder()
    full = Trainer(config(tiny_dir, tmp_path / "a", steps=4, use_paec=False, loss=loss),
                   [straight])
    full.train()

    first = Recorder(stop_after=2)
    paused = Trainer(config(tiny_dir, tmp_path / "b", steps=4, use_paec=False, loss=loss),
                     [first])
    result = paused.train()
    assert result.status == "paused" and result.checkpoint is not None
    saved = load_training_state(result.checkpoint)["entropic"]
    # a non-zero integral: a controller started afresh on resume would give other alphas
    assert saved == paused.controller.state_dict() and saved["integral"] != 0.0
    second = Recorder()
    resumed = Trainer(config(tiny_dir, tmp_path / "b", steps=4, use_paec=False, loss=loss),
                      [second], resume_from=result.checkpoint)
    assert resumed.controller == paused.controller  # the integral and the last alpha
    resumed.train()

    alphas = [m["policy/entropic_alpha"] for m in first.metrics + second.metrics]
    integrals = [m["policy/entropic_integral"] for m in first.metrics + second.metrics]
    assert alphas == [m["policy/entropic_alpha"] for m in straight.metrics]
    assert integrals == [m["policy/entropic_integral"] for m in straight.metrics]
    assert resumed.controller == full.controller
    a, b = params(full.model), params(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("loss_type", ["ce_gppo", "erc", "entropic", "aent"])
def test_cli_set_selects_the_baseline(tiny_dir: Path, tmp_path: Path, loss_type: str) -> None:
    cfg = config(tiny_dir, tmp_path, steps=2, use_paec=False).to_dict()
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    assert cli_main(["train", str(path), "--set", "steps=1",
                     "--set", f"loss.loss_type={loss_type}"]) == 0
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["loss"]["loss_type"] == loss_type
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    key = LOGGED[PolicyLossType(loss_type)][0]
    assert [x["step"] for x in lines] == [1] and key in lines[0]["metrics"]
