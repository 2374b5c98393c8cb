"""Tests for maskrcnn.utils.metric_logger and maskrcnn.utils.logger."""

import logging

import pytest
import torch

from maskrcnn.utils import MetricLogger, SmoothedValue, eta_string, setup_logger


def test_smoothed_value_window_and_global():
    v = SmoothedValue(window_size=3)
    for x in [1.0, 2.0, 3.0, 10.0]:
        v.update(x)
    assert v.latest == 10.0
    assert v.median == 3.0
    assert v.avg == pytest.approx(5.0)
    assert v.max == 10.0
    assert v.global_avg == pytest.approx(4.0)
    v.update(0.0, n=4)
    assert v.global_avg == pytest.approx(16.0 / 8)


def test_metric_logger_update_and_str():
    ml = MetricLogger(delimiter="  ")
    ml.update(loss_mask=torch.tensor(0.1), loss_box=0.5)
    ml.update(loss_mask=torch.tensor(0.15), loss_box=0.5)
    ml.update(loss_mask=0.2, loss_box=1)
    assert ml.loss_mask.median == pytest.approx(0.15)
    assert set(ml.meters) == {"loss_mask", "loss_box"}
    s = str(ml)
    assert s == "loss_mask: 0.1500 (0.1500)  loss_box: 0.5000 (0.6667)"
    assert ml.latest_dict() == pytest.approx({"loss_mask": 0.2, "loss_box": 1.0})
    assert ml.median_dict() == pytest.approx({"loss_mask": 0.15, "loss_box": 0.5})
    with pytest.raises(AttributeError):
        ml.nonexistent
    with pytest.raises(TypeError):
        ml.update(bad="x")


def test_eta_string():
    assert eta_string(0) == "0:00:00"
    assert eta_string(86400 + 2 * 3600 + 3 * 60 + 4.7) == "1 day, 2:03:04"


@pytest.fixture
def restore_loggers():
    saved = {}
    for name in ("maskrcnn", "maskrcnn_test_rank1"):
        lg = logging.getLogger(name)
        saved[name] = (list(lg.handlers), lg.propagate, lg.level)
    yield
    for name, (handlers, propagate, level) in saved.items():
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if h not in handlers:
                lg.removeHandler(h)
                h.close()
        lg.propagate, lg.level = propagate, level


def test_setup_logger_idempotent_and_file(tmp_path, capsys, restore_loggers):
    log = setup_logger("maskrcnn", output_dir=str(tmp_path), distributed_rank=0)
    setup_logger("maskrcnn", output_dir=str(tmp_path), distributed_rank=0)
    assert len(log.handlers) == 2
    logging.getLogger("maskrcnn.some.module").info("hello from child")
    for h in log.handlers:
        h.flush()
    out = capsys.readouterr().out
    assert "maskrcnn.some.module INFO: hello from child" in out
    assert "hello from child" in (tmp_path / "log.txt").read_text()

    other = setup_logger("maskrcnn_test_rank1", output_dir=str(tmp_path / "r1"), distributed_rank=1)
    assert len(other.handlers) == 1 and other.handlers[0].level == logging.WARNING
    assert not (tmp_path / "r1" / "log.txt").exists()
