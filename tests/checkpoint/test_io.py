"""maskrcnn.checkpoint.io: one atomic writer and one safe reader for every kind of file."""
import os
import pathlib
import pickle

import numpy as np
import pytest
import torch

from maskrcnn.checkpoint import CheckpointError, UnsafePickleError, atomic_write, read_checkpoint, safe_load


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _writers():
    return {
        "zip": lambda obj, p: torch.save(obj, p),
        "legacy": lambda obj, p: torch.save(obj, p, _use_new_zipfile_serialization=False),
        "pickle": lambda obj, p: p.write_bytes(pickle.dumps(obj, protocol=2)),
    }


@pytest.mark.parametrize("kind", ["zip", "legacy", "pickle"])
def test_every_kind_of_file_is_refused_the_same_way(tmp_path, kind):
    marker = tmp_path / "marker"
    path = tmp_path / f"evil_{kind}.pth"
    _writers()[kind]({"model": {"w": [1.0]}, "x": _Payload(marker)}, path)
    with pytest.raises(UnsafePickleError) as info:
        safe_load(path)
    msg = str(info.value)
    assert msg.startswith(f"{path} is not a valid checkpoint") and "refused for safety" in msg
    assert "getattr" in msg  # names what the file asked for (the lookup of Path.touch)
    assert isinstance(info.value, CheckpointError) and isinstance(info.value, pickle.UnpicklingError)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["zip", "legacy"])
def test_torch_files_round_trip(tmp_path, kind):
    state = {"model": {"w": torch.arange(6.0).view(2, 3)}, "iteration": 7}
    path = tmp_path / "ok.pth"
    _writers()[kind](state, path)
    data = read_checkpoint(path)
    assert data["iteration"] == 7 and torch.equal(data["model"]["w"], state["model"]["w"])


def test_numpy_pickle_is_read_and_raw_state_dicts_are_wrapped(tmp_path):
    path = tmp_path / "w.pkl"
    arrays = {"conv1_w": np.ones((2, 3), dtype=np.float32), "name": "R-50"}
    path.write_bytes(pickle.dumps(arrays, protocol=2))
    data = read_checkpoint(path)
    assert set(data) == {"model"} and np.array_equal(data["model"]["conv1_w"], arrays["conv1_w"])
    torch.save({"state_dict": {"w": torch.ones(1)}, "epoch": 3}, tmp_path / "sd.pth")
    assert set(read_checkpoint(tmp_path / "sd.pth")) == {"model", "epoch"}


def test_corrupt_and_non_dict_files_name_the_file(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"model": {"w": torch.zeros(100)}}, good)
    for name, content in [("truncated.pth", good.read_bytes()[:300]), ("empty.pth", b""),
                          ("text.pkl", b"not a pickle\n")]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=rf"{name} is not a valid checkpoint \(corrupt or truncated\)"):
            safe_load(tmp_path / name)
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match=r"list\.pth is not a valid checkpoint: expected a dict, got list"):
        read_checkpoint(tmp_path / "list.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        safe_load(tmp_path / "nope.pth")


def test_atomic_write_creates_the_directory_and_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "a" / "b" / "out.bin"
    atomic_write(path, lambda f: f.write(b"first"))
    assert path.read_bytes() == b"first"

    def fail(f):
        f.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fail)
    assert path.read_bytes() == b"first" and os.listdir(path.parent) == ["out.bin"]
