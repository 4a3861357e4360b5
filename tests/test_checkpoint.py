import json

import numpy as np
import pytest
import torch

from gendm.core.checkpoint import (
    find_checkpoint_dir,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
    save_checkpoint_dir,
)
from gendm.core.errors import CheckpointError


def _state():
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters())
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    return (
        net,
        opt,
        {
            "net": net.state_dict(),
            "opt": opt.state_dict(),
            "stats": np.arange(3.0),
            "pair": (1, "a"),
            "none": None,
        },
    )


def test_roundtrip_restores_modules_optimisers_and_plain_values(tmp_path):
    net, opt, state = _state()
    save_checkpoint(tmp_path / "ck", state, {"algo": "x"})
    loaded, meta = load_checkpoint(tmp_path / "ck")
    assert meta == {"algo": "x"} and read_metadata(tmp_path / "ck") == {"algo": "x"}
    net2 = torch.nn.Linear(3, 2)
    opt2 = torch.optim.Adam(net2.parameters())
    net2.load_state_dict(loaded["net"])
    opt2.load_state_dict(loaded["opt"])  # int-keyed optimiser state survives JSON
    assert torch.equal(net2.weight, net.weight)
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert (
        np.array_equal(loaded["stats"], np.arange(3.0))
        and loaded["pair"] == (1, "a")
        and loaded["none"] is None
    )


def test_flipped_byte_is_detected(tmp_path):
    save_checkpoint(tmp_path, _state()[2])
    blob = bytearray((tmp_path / "weights.safetensors").read_bytes())
    blob[-5] ^= 0xFF
    (tmp_path / "weights.safetensors").write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path)


def test_truncated_weights_and_broken_meta_are_detected(tmp_path):
    save_checkpoint(tmp_path, _state()[2])
    w = tmp_path / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path)
    (tmp_path / "meta.json").write_text('{"format_version": 1, "sta')
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path)


def test_a_pickle_is_never_loaded(tmp_path):
    import pickle

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('executed')",))

    save_checkpoint(tmp_path, {"x": torch.zeros(2)})
    blob = pickle.dumps(Boom())
    (tmp_path / "weights.safetensors").write_bytes(blob)
    meta = json.loads((tmp_path / "meta.json").read_text())
    import hashlib

    meta |= {"weights_bytes": len(blob), "weights_sha256": hashlib.sha256(blob).hexdigest()}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(tmp_path)


def test_missing_checkpoint_and_unstorable_values(tmp_path):
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="Cannot store"):
        save_checkpoint(tmp_path, {"f": object()})


def test_directory_swap_falls_back_to_previous_checkpoint(tmp_path):
    save_checkpoint_dir(tmp_path / "ck", {"step": 1})
    save_checkpoint_dir(tmp_path / "ck", {"step": 2})
    assert load_checkpoint(find_checkpoint_dir(tmp_path / "ck"))[0]["step"] == 2
    (tmp_path / "ck").rename(tmp_path / "ck.old")  # a crash between the two renames
    assert find_checkpoint_dir(tmp_path / "ck") == tmp_path / "ck.old"


def test_unreadable_checkpoints_say_what_to_do_and_callers_can_say_it_better(tmp_path):
    import pickle

    from gendm.core.checkpoint import CorruptCheckpointError

    save_checkpoint(tmp_path, _state()[2])
    (tmp_path / "weights.safetensors").unlink()
    with pytest.raises(CorruptCheckpointError) as e:
        load_checkpoint(tmp_path)
    assert "weights.safetensors is missing" in str(e.value) and "Delete the checkpoint directory" in str(
        e.value
    )
    better = e.value.with_hint("Rerun with --no-resume.")
    assert isinstance(better, CheckpointError) and "Delete" not in str(better)
    assert str(better) == f"{e.value.problem} Rerun with --no-resume."
    assert str(pickle.loads(pickle.dumps(better))) == str(better)  # e.g. back from a Ray worker
    (tmp_path / "meta.json").write_text("[]")
    with pytest.raises(CorruptCheckpointError, match="not a gendm checkpoint"):
        load_checkpoint(tmp_path)
    # no checkpoint at all is no corrupt one: nothing there to delete
    with pytest.raises(CheckpointError, match=r"meta\.json is missing") as e:
        load_checkpoint(tmp_path / "nope")
    assert not isinstance(e.value, CorruptCheckpointError)
