"""experiments.records: a record matches a run by its settings and data, not by where it was
written; a record of other settings is never overwritten."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.records import comparable, differences, load_finished, write


def test_where_a_run_wrote_does_not_matter_but_what_it_did_does() -> None:
    a = {"output_dir": "runs/x", "train_data": "runs/x/train.jsonl", "learning_rate": 1e-5,
         "paec": {"penalty_weight": 1.0}}
    b = a | {"output_dir": "/tmp/y", "train_data": "/tmp/y/train.jsonl"}
    assert comparable(a, "d") == comparable(b, "d") != comparable(a, "other data")
    c = b | {"paec": {"penalty_weight": 3.0}}
    assert differences(comparable(a, "d"), comparable(c, "d")) == [
        "paec.penalty_weight: 1.0 -> 3.0"]


def test_a_record_of_other_settings_stops_the_run_and_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "grpo-seed0.json"
    write(path, {"config": {"learning_rate": 1e-5}, "data_sha256": "d"})
    assert load_finished(path, {"learning_rate": 1e-5}, "d") is not None
    with pytest.raises(SystemExit, match="learning_rate: 1e-05 -> 2e-05"):
        load_finished(path, {"learning_rate": 2e-5}, "d")
    assert path.exists() and not path.with_suffix(".json.tmp").exists()
    assert load_finished(tmp_path / "none.json", {}, "d") is None


def test_a_field_added_after_a_record_matches_only_at_its_default(tmp_path: Path) -> None:
    # A record made before `loss.dual_clip` and `data_format` existed: the same run today has
    # them at their defaults, which is what the record's run did.
    path = tmp_path / "grpo-seed0.json"
    write(path, {"config": {"learning_rate": 1e-5, "loss": {"clip_low": 0.2}},
                 "data_sha256": "d"})
    today = {"learning_rate": 1e-5, "data_format": None,
             "loss": {"clip_low": 0.2, "dual_clip": 3.0}}
    assert load_finished(path, today, "d") is not None
    with pytest.raises(SystemExit, match=r"loss.dual_clip: None -> 10.0"):
        load_finished(path, today | {"loss": {"clip_low": 0.2, "dual_clip": 10.0}}, "d")
    with pytest.raises(SystemExit, match="data_format: None -> 'gsm8k'"):
        load_finished(path, today | {"data_format": "gsm8k"}, "d")
