"""Evaluation progress: a line every ``log_period_s`` seconds with images done / total, seconds
per image (warm-up batches left out) and ETA, on a real test loader and a real model."""
import logging
import re

import pytest
import torch

from conftest import tiny_cfg
from maskrcnn.data.build import build_test_loaders
from maskrcnn.data.datasets.shapes import ensure_shapes_dataset
from maskrcnn.engine import inference
from maskrcnn.engine.inference import InferenceProgress, evaluate, predict_dataset
from maskrcnn.modeling import build_model

LINE = re.compile(r"Predicting toy: (\d+)/(\d+) images, (\d+\.\d{4}) s / image "
                  r"\(data (\d+\.\d{4}|nan) s / image\), ETA (\d+:\d\d:\d\d)$")


@pytest.fixture
def records(caplog):
    """The engine's log records, also when ``setup_logger`` stopped ``maskrcnn`` from propagating."""
    log = logging.getLogger(inference.__name__)
    propagate, log.propagate = log.propagate, False  # each record once
    log.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger=inference.__name__)
    yield caplog
    log.removeHandler(caplog.handler)
    log.propagate = propagate


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("progress")
    ann, img_dir = ensure_shapes_dataset(str(base / "data"), "val", 7, 3)
    cfg = tiny_cfg()
    cfg.merge_from_list(["DATASETS.CATALOG", {"toy": {"ANN_FILE": ann, "IMG_DIR": img_dir}},
                         "DATASETS.TEST", ("toy",), "DATALOADER.NUM_WORKERS", 0, "TEST.IMS_PER_BATCH", 2,
                         "INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 100])
    (name, loader), = build_test_loaders(cfg)
    torch.manual_seed(0)
    return build_model(cfg), loader


def _progress_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("Predicting toy: ")]


def test_period_zero_logs_every_batch_with_done_total_speed_and_eta(setup, records):
    model, loader = setup
    model.train()
    preds = predict_dataset(model, loader, name="toy", log_period_s=0)
    assert len(preds) == 7 and model.training  # mode restored
    lines = _progress_lines(records)
    assert len(lines) == 4  # batches of 2, 2, 2, 1
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [int(m.group(1)) for m in parsed] == [2, 4, 6, 7] and {int(m.group(2)) for m in parsed} == {7}
    assert all(float(m.group(3)) > 0 for m in parsed)
    assert parsed[-1].group(5) == "0:00:00"
    # warm-up: min(5, batches - 1) = 3 batches are left out, so data time is known only at the end
    assert [m.group(4) == "nan" for m in parsed] == [True, True, True, False]
    done = [r.getMessage() for r in records.records if r.getMessage().startswith("Predicted toy")]
    assert len(done) == 1 and re.match(r"Predicted toy: 7 images in \d+\.\d s, \d+\.\d{4} s / image "
                                       r"after 3 warm-up batches$", done[0]), done


def test_a_long_period_logs_only_the_summary(setup, records):
    model, loader = setup
    predict_dataset(model, loader, name="toy", log_period_s=3600)
    assert _progress_lines(records) == []
    assert any(r.getMessage().startswith("Predicted toy: 7 images in ") for r in records.records)


def test_evaluate_passes_the_period_on(setup, records, tmp_path):
    model, loader = setup
    metrics = evaluate(model, [("toy", loader)], str(tmp_path), log_period_s=0)
    assert set(metrics["toy"]) == {"bbox", "segm"}
    assert len(_progress_lines(records)) == 4
    assert (tmp_path / "inference" / "toy" / "metrics.json").is_file()


def test_timing_leaves_out_the_warm_up_and_gives_the_eta(monkeypatch, records):
    clock = iter(range(100))
    monkeypatch.setattr(inference.time, "perf_counter", lambda: float(next(clock)))
    progress = InferenceProgress("toy", total_images=40, num_batches=10, log_period_s=0)
    assert progress.warmup == 5
    for _ in range(5):  # slow warm-up batches: 10 s for 4 images
        progress.update(4, 10.0, 1.0)
    progress.update(4, 0.8, 0.2)  # then 0.2 s per image, 0.05 of it loading
    progress.update(4, 0.8, 0.2)
    assert progress.seconds_per_image() == pytest.approx(0.2)
    m = LINE.match(progress.line())
    assert m and m.groups() == ("28", "40", "0.2000", "0.0500", "0:00:02")  # 12 images left x 0.2 s
    lines = _progress_lines(records)
    assert len(lines) == 7 and lines[-1] == progress.line()
    during_warmup = LINE.match(lines[0])  # no timed batch yet: everything so far counts
    assert during_warmup.group(1) == "4" and during_warmup.group(4) == "nan"


def test_one_batch_is_timed_without_warm_up(monkeypatch):
    assert InferenceProgress("toy", 3, num_batches=1).warmup == 0
    assert InferenceProgress("toy", 30, num_batches=3).warmup == 2
