"""User errors in real runs of the tools: one block on stderr (what, which key / file / id, what to
do) without a traceback, the same block in OUTPUT_DIR/log.txt once that exists, and the exit
status of its kind (maskrcnn/utils/errors.py); MASKRCNN_DEBUG=1 adds the traceback. Bugs keep
their traceback."""
import json
import os
import subprocess
import sys

import pytest

from maskrcnn.data.datasets.shapes import ensure_shapes_dataset
from maskrcnn.utils import errors
from maskrcnn.utils.errors import (EXIT_CONFIG, EXIT_DATA, EXIT_STOPPED, EXIT_WEIGHTS, DataError, UserError,
                                   main_guard)
from conftest import write_tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(ROOT, "tools")
PATCHED_TRAIN = os.path.join(ROOT, "tests", "engine", "patched_train.py")
HEADLINE = "ERROR ("


def run(args, debug=False):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop(errors.DEBUG_ENV, None)
    if debug:
        env[errors.DEBUG_ENV] = "1"
    return subprocess.run([sys.executable] + [str(a) for a in args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


def assert_user_error(proc, code, *names, log=None):
    """One block naming ``names``, no traceback, exit ``code``; with ``log``, the block is in it too."""
    err = proc.stderr
    assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    assert err.count(HEADLINE) == 1 and f"exit status {code}" in err, err[-3000:]
    for name in names:
        assert name in err, (name, err[-3000:])
    if log is not None:
        text = log.read_text()
        assert text.count(HEADLINE) == 1 and all(name in text for name in names), text[-3000:]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("user_errors")
    ann, img_dir = ensure_shapes_dataset(str(base / "data"), "train", 4, 0)
    coco = json.loads(open(ann).read())
    coco["annotations"][0]["category_id"] = 99  # not among the categories
    broken = base / "broken.json"
    broken.write_text(json.dumps(coco))
    return {"base": base, "ann": ann, "img_dir": img_dir, "broken": str(broken),
            "bad_ann_id": coco["annotations"][0]["id"]}


def _config(data, name, train="toy", **solver):
    catalog = {"toy": (data["ann"], data["img_dir"]), "broken": (data["broken"], data["img_dir"])}
    out = data["base"] / name
    return write_tiny_config(data["base"] / f"{name}.yaml", catalog, [train], [], out, **solver), out


def test_config_mistakes_exit_2_naming_the_key(data):
    cfg, out = _config(data, "config")
    proc = run([os.path.join(TOOLS, "train_net.py"), "--config-file", cfg, "SOLVER.BASE_LRR", "0.1"])
    assert_user_error(proc, EXIT_CONFIG, "configuration error", "SOLVER.BASE_LRR", "SOLVER.BASE_LR")
    proc = run([os.path.join(TOOLS, "train_net.py"), "--config-file", cfg, "SOLVER.MAX_ITER", "-5"])
    assert_user_error(proc, EXIT_CONFIG, "SOLVER.MAX_ITER = -5", "[0, inf)")
    assert not out.exists()  # stopped before anything was written


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_unusable_output_dir_names_the_key(data, where):
    if where == "proc" and not os.path.isdir("/proc/self"):
        pytest.skip("no /proc on this system")
    blocker = data["base"] / "a_file"
    blocker.write_text("")
    output_dir = str(blocker / "run") if where == "under_a_file" else "/proc/maskrcnn_test_run"
    cfg, _ = _config(data, f"outdir_{where}")
    proc = run([os.path.join(TOOLS, "train_net.py"), "--config-file", cfg, "OUTPUT_DIR", output_dir])
    assert_user_error(proc, EXIT_CONFIG, f"OUTPUT_DIR {output_dir} cannot be created or written")


def test_dataset_error_exits_3_and_is_in_the_log(data):
    cfg, out = _config(data, "dataset", train="broken")
    proc = run([os.path.join(TOOLS, "train_net.py"), "--config-file", cfg])
    assert_user_error(proc, EXIT_DATA, "DatasetError: dataset 'broken'", f"annotation id {data['bad_ann_id']}",
                      "tools/check_dataset.py", log=out / "log.txt")
    proc = run([os.path.join(TOOLS, "train_net.py"), "--config-file", cfg, "DATASETS.TRAIN", "('nope',)",
                "OUTPUT_DIR", str(out) + "_unknown"])
    assert_user_error(proc, EXIT_DATA, "Unknown dataset 'nope'", "DATASETS.CATALOG.nope.ANN_FILE")


def test_non_finite_loss_exits_5_and_is_in_the_log(data):
    cfg, out = _config(data, "nonfinite", MAX_ITER=3)
    proc = run([PATCHED_TRAIN, "--nan-at", "2", "--", "--config-file", cfg])
    assert_user_error(proc, EXIT_STOPPED, "NonFiniteLossError: Non-finite loss at iteration 2",
                      "SOLVER.BASE_LR", log=out / "log.txt")


def test_missing_weights_exit_4_and_debug_shows_the_traceback(data):
    cfg, out = _config(data, "weights")
    missing = data["base"] / "nope.pth"
    args = [os.path.join(TOOLS, "train_net.py"), "--config-file", cfg, "MODEL.WEIGHT", missing]
    proc = run(args)
    assert_user_error(proc, EXIT_WEIGHTS, f"checkpoint file not found: {missing}", log=out / "log.txt")
    proc = run(args + ["OUTPUT_DIR", str(out) + "_debug"], debug=True)
    assert proc.returncode == EXIT_WEIGHTS
    assert "Traceback (most recent call last)" in proc.stderr and "CheckpointNotFoundError" in proc.stderr
    assert proc.stderr.count(HEADLINE) == 1


def test_the_other_tools(data, tmp_path):
    cfg, out = _config(data, "others")
    missing = tmp_path / "nope.pth"
    proc = run([os.path.join(TOOLS, "test_net.py"), "--config-file", cfg, "DATASETS.TEST", "('toy',)",
                "MODEL.WEIGHT", missing])
    assert_user_error(proc, EXIT_WEIGHTS, str(missing), log=out / "log.txt")
    proc = run([os.path.join(TOOLS, "check_dataset.py"), "--config-file", cfg, "DTYPE", "float16"])
    assert_user_error(proc, EXIT_CONFIG, "DTYPE = 'float16'", "mixed precision")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    proc = run([os.path.join(TOOLS, "convert_weights.py"), "auto", garbage, tmp_path / "out.pth"])
    assert_user_error(proc, EXIT_WEIGHTS, str(garbage))
    proc = run([os.path.join(TOOLS, "slim_checkpoint.py"), missing, tmp_path / "slim.pth"])
    assert_user_error(proc, EXIT_WEIGHTS, str(missing))
    proc = run([os.path.join(TOOLS, "demo.py"), "--config-file", cfg, "--weights", missing, "--input", garbage])
    assert_user_error(proc, EXIT_WEIGHTS, f"weights file not found: {missing}")
    proc = run([os.path.join(TOOLS, "visualize_results.py"), "--results", garbage, "--ann-file",
                tmp_path / "none.json", "--img-dir", data["img_dir"], "--output", tmp_path / "vis"])
    assert_user_error(proc, EXIT_DATA, str(tmp_path / "none.json"))
    proc = run([os.path.join(TOOLS, "visualize_data.py"), "--config-file", cfg, "--datasets", "broken",
                "--output", tmp_path / "vis_data"])
    assert_user_error(proc, EXIT_DATA, "DatasetError: dataset 'broken'")


# ------------------------------------------------------------------ main_guard in this process
def _exit_status(fn, capsys):
    with pytest.raises(SystemExit) as info:
        main_guard(fn)
    return info.value.code, capsys.readouterr().err


def test_main_guard_statuses_and_bugs(capsys, monkeypatch):
    monkeypatch.delenv(errors.DEBUG_ENV, raising=False)
    assert _exit_status(lambda: None, capsys)[0] == 0
    assert _exit_status(lambda: 1, capsys)[0] == 1

    def data_error():
        raise DataError("image id 7 (a.jpg): no such file; fix DATASETS.CATALOG.x.IMG_DIR")
    code, err = _exit_status(data_error, capsys)
    assert code == EXIT_DATA and "DataError: image id 7 (a.jpg)" in err and "Traceback" not in err

    def bug():
        raise ZeroDivisionError("a bug")
    with pytest.raises(ZeroDivisionError):  # not caught: Python prints its traceback, status 1
        main_guard(bug)


def test_every_user_error_class_has_its_status():
    from maskrcnn.checkpoint.io import CheckpointError, CheckpointNotFoundError, UnsafePickleError
    from maskrcnn.checkpoint.weights import WeightsNameError
    from maskrcnn.config import ConfigError, ConfigKeyError
    from maskrcnn.data.datasets.catalog import UnknownDatasetError
    from maskrcnn.data.datasets.report import DatasetError
    from maskrcnn.data.image_io import ImageFileNotFoundError
    from maskrcnn.engine.hooks import DivergenceError
    from maskrcnn.engine.trainer import NonFiniteLossError

    expected = {ConfigError: EXIT_CONFIG, ConfigKeyError: EXIT_CONFIG, DatasetError: EXIT_DATA,
                UnknownDatasetError: EXIT_DATA, ImageFileNotFoundError: EXIT_DATA, CheckpointError: EXIT_WEIGHTS,
                CheckpointNotFoundError: EXIT_WEIGHTS, UnsafePickleError: EXIT_WEIGHTS,
                WeightsNameError: EXIT_WEIGHTS, NonFiniteLossError: EXIT_STOPPED, DivergenceError: EXIT_STOPPED}
    for cls, code in expected.items():
        assert issubclass(cls, UserError) and cls.exit_code == code, cls
    # They stay what callers caught before.
    assert issubclass(ConfigError, (KeyError, ValueError)) and issubclass(CheckpointNotFoundError, FileNotFoundError)
    assert issubclass(NonFiniteLossError, FloatingPointError) and issubclass(CheckpointError, RuntimeError)
