"""Checkpoints: durable writes, the previous one kept, and a fallback when the latest cannot be loaded."""

import logging
import os

import pytest
import torch

from test_train import composed, read_metrics
from trpo import checkpoint
from trpo.train import train


def test_save_keeps_the_previous_checkpoint_and_syncs_file_and_directory(tmp_path, monkeypatch):
    synced = []
    fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda descriptor: synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
                        or fsync(descriptor))
    checkpoint.save(tmp_path, {"global_step": 1, "weights": torch.ones(3)})
    checkpoint.save(tmp_path, {"global_step": 2, "weights": torch.zeros(3)})
    assert checkpoint.load_file(tmp_path / checkpoint.PREVIOUS)["global_step"] == 1
    assert checkpoint.load(tmp_path)["global_step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint.LATEST, checkpoint.PREVIOUS]  # no temporary left
    # each save: the data before its renames, then the directory that holds them
    assert synced == [str(tmp_path / f"{checkpoint.LATEST}.tmp"), str(tmp_path)] * 2


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_a_damaged_latest_gives_one_line_or_falls_back_to_the_previous(tmp_path, caplog, damage):
    checkpoint.save(tmp_path, {"global_step": 1, "weights": torch.ones(1000)})
    latest = tmp_path / checkpoint.LATEST
    damaged = b"" if damage == "empty" else latest.read_bytes()[:300]
    latest.write_bytes(damaged)
    with pytest.raises(ValueError) as error:  # no previous one yet
        checkpoint.load(tmp_path)
    message = str(error.value)
    assert message.startswith(f"checkpoint {latest} cannot be loaded: ") and "\n" not in message
    assert len(message) > len(f"checkpoint {latest} cannot be loaded: ")  # a reason, even for an empty file

    checkpoint.save(tmp_path, {"global_step": 1, "weights": torch.ones(1000)})  # now the previous one
    checkpoint.save(tmp_path, {"global_step": 2, "weights": torch.zeros(1000)})
    latest.write_bytes(damaged)
    with caplog.at_level(logging.WARNING, logger="trpo.checkpoint"):
        assert checkpoint.load(tmp_path)["global_step"] == 1
    assert f"using the previous checkpoint {tmp_path / checkpoint.PREVIOUS} (step 1)" in caplog.text
    assert (tmp_path / f"{checkpoint.LATEST}.damaged").read_bytes() == damaged  # set aside, for a look
    assert checkpoint.load(tmp_path)["global_step"] == 1  # again, as a resumed run's second look would
    checkpoint.save(tmp_path, {"global_step": 3, "weights": torch.zeros(1000)})
    assert checkpoint.load_file(tmp_path / checkpoint.PREVIOUS)["global_step"] == 1  # not the damaged file


def test_a_run_resumes_from_the_previous_checkpoint_when_the_latest_is_damaged(tmp_path, caplog):
    overrides = ("debug=smoke", "checkpoint.resume=auto")  # 2 iterations of 128 steps, a checkpoint after each
    train(composed("CartPole-v1", *overrides), tmp_path)
    latest = tmp_path / "checkpoints" / checkpoint.LATEST
    latest.write_bytes(latest.read_bytes()[:1000])  # e.g. the disk filled up
    with caplog.at_level(logging.WARNING, logger="trpo.checkpoint"):
        train(composed("CartPole-v1", *overrides, "total_steps=384"), tmp_path)
    assert "using the previous checkpoint" in caplog.text
    assert [row["global_step"] for row in read_metrics(tmp_path)] == [128, 256, 384]  # iteration 2 again, then 3
    assert checkpoint.load(tmp_path / "checkpoints")["iteration"] == 3
