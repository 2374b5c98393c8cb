"""The command-line tools for real: train, checkpoints, resume, fine-tune, errors, evaluation,
prediction, and a 2-process gloo run. Everything runs as subprocesses on files in tmp_path."""
import glob
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from maskrcnn.data.datasets.shapes import ensure_shapes_dataset

from conftest import write_tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(ROOT, "tools")


def tiny_yaml(data_root, output_dir, **solver):
    """A config file for a ~1M-parameter model on a 12-image synthetic COCO-format dataset,
    4 iterations with a checkpoint every 2 unless ``solver`` overrides it."""
    catalog = {"toy_train": ensure_shapes_dataset(data_root, "train", 12, 0),
               "toy_val": ensure_shapes_dataset(data_root, "val", 6, 1)}
    solver = dict(dict(MAX_ITER=4, STEPS=[3], WARMUP_ITERS=2, CHECKPOINT_PERIOD=2), **solver)
    return write_tiny_config(str(output_dir) + "_config.yaml", catalog, ["toy_train"], ["toy_val"], output_dir,
                             **solver)


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args, launcher=None, check=True, timeout=600):
    cmd = (launcher or [sys.executable]) + list(args)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real 4-iteration training run, shared by the tests that inspect its outputs."""
    base = tmp_path_factory.mktemp("train")
    out = base / "out"
    cfg = tiny_yaml(str(base / "data"), out)
    proc = run([os.path.join(TOOLS, "train_net.py"), "--config-file", cfg, "TEST.EVAL_PERIOD", "2"])
    return {"cfg": cfg, "out": out, "proc": proc, "base": base}


def test_training_writes_checkpoints_logs_config_events_and_metrics(trained):
    out = trained["out"]
    assert (out / "model_0000002.pth").is_file()
    assert (out / "model_final.pth").is_file()
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["MODEL"]["ROI_BOX_HEAD"]["NUM_CLASSES"] == 4  # 0 resolved: 3 shapes + background
    log = (out / "log.txt").read_text()
    for word in ("eta:", "iter: 4", "loss_mask:", "loss_objectness:", "lr:", "max mem:", "time:", "data:"):
        assert word in log, word
    assert "random weights" not in log  # from scratch, but nothing frozen and GN: no warning
    ckpt = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)
    assert ckpt["iteration"] == 4
    assert {"model", "optimizer", "scheduler"} <= set(ckpt)
    assert [c["name"] for c in ckpt["categories"]] == ["circle", "square", "triangle"]
    metrics = json.loads((out / "inference" / "toy_val" / "metrics.json").read_text())
    assert set(metrics) == {"bbox", "segm"}
    assert set(metrics["segm"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert (out / "inference" / "toy_val" / "coco_instances_results.json").is_file()
    # TEST.EVAL_PERIOD 2: evaluated at iteration 2 and again at the end.
    assert log.count("Inference on toy_val") == 2


def test_tensorboard_events_have_losses_lr_and_ap(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = glob.glob(str(trained["out"] / "events.out.tfevents.*"))
    assert files
    tags = set()
    for f in files:
        acc = EventAccumulator(f)
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    for tag in ("train/loss", "train/loss_mask", "train/loss_classifier", "train/lr", "train/time",
                "eval/toy_val/segm/AP", "eval/toy_val/bbox/AP"):
        assert tag in tags, (tag, sorted(tags))


def test_the_logged_lr_is_the_one_each_step_used(trained):
    """BASE_LR 0.01, WARMUP_ITERS 2 (factor 1/3), STEPS (3,): step i uses the LR of schedule
    position i - 1, the first warmup LR included."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    expected = {1: 0.01 / 3, 2: 0.01 * (1 / 3 + 1) / 2, 3: 0.01, 4: 0.001}
    logged = {}
    for f in glob.glob(str(trained["out"] / "events.out.tfevents.*")):
        acc = EventAccumulator(f)
        acc.Reload()
        logged.update({e.step: e.value for e in acc.Scalars("train/lr") if e.step <= 4})
    assert logged == pytest.approx(expected, rel=1e-5)
    lines = [line for line in trained["proc"].stdout.splitlines() if "  iter: " in line]
    in_log = {int(line.split("iter: ")[1].split()[0]): float(line.split("lr: ")[1].split()[0]) for line in lines}
    assert in_log == pytest.approx(expected, abs=1e-6)


def test_resume_continues_iteration_optimizer_and_schedule(trained):
    out = trained["out"]
    cfg = trained["cfg"]
    proc = run([os.path.join(TOOLS, "train_net.py"), "--config-file", cfg, "--resume",
                "SOLVER.MAX_ITER", "6", "TEST.EVAL_PERIOD", "0"])
    log = proc.stdout + proc.stderr
    assert "Start training from iteration 4 to 6" in log
    ckpt = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)
    assert ckpt["iteration"] == 6
    assert ckpt["scheduler"]["last_epoch"] == 6
    assert "iter: 5" in log and "iter: 1 " not in log


def _files(folder):
    """Every file under ``folder``: relative path -> (bytes, mtime in ns)."""
    out = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = (f.read(), os.stat(path).st_mtime_ns)
    return out


def test_a_fresh_start_never_overwrites_an_earlier_run(trained, tmp_path):
    """Without --resume, an OUTPUT_DIR holding checkpoints is refused before anything is written
    (no log line, no config.yaml, no event file); the message gives the three ways out."""
    out = trained["out"]
    weights = str(tmp_path / "w.pth")
    import shutil
    shutil.copy(out / "model_0000002.pth", weights)
    before = _files(out)
    assert {"model_final.pth", "last_checkpoint", "config.yaml", "log.txt"} <= set(before)
    proc = run([os.path.join(TOOLS, "train_net.py"), "--config-file", trained["cfg"],
                "MODEL.WEIGHT", weights, "SOLVER.MAX_ITER", "2", "DATASETS.TEST", "()"], check=False)
    assert proc.returncode != 0
    assert _files(out) == before  # every file keeps its bytes (and is not even rewritten)
    err = proc.stderr
    assert f"OUTPUT_DIR {out} holds the checkpoints of an earlier run" in err and "nothing was written" in err
    for way_out in ("add --resume", "set another OUTPUT_DIR", "add --overwrite"):
        assert way_out in err, way_out
    assert "Start training" not in proc.stdout + err

    # --overwrite: the earlier run's checkpoints, config and events go, then a fresh run starts
    # from the weights only; its log is appended to the old one.
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    old_events = set(glob.glob(str(copy / "events.out.tfevents.*")))
    assert (copy / "model_0000002.pth").is_file() and old_events
    inside = run([os.path.join(TOOLS, "train_net.py"), "--config-file", trained["cfg"], "--overwrite",
                  "MODEL.WEIGHT", str(copy / "model_0000002.pth"), "OUTPUT_DIR", str(copy)], check=False)
    assert inside.returncode != 0 and "is one of the files that --overwrite deletes" in inside.stderr
    assert _files(copy).keys() == before.keys()  # refused: nothing deleted
    proc = run([os.path.join(TOOLS, "train_net.py"), "--config-file", trained["cfg"], "--overwrite",
                "MODEL.WEIGHT", weights, "SOLVER.MAX_ITER", "2", "DATASETS.TEST", "()", "OUTPUT_DIR", str(copy)])
    log = proc.stdout + proc.stderr
    assert "--overwrite: deleted the earlier run's" in log and "model_0000002.pth" in log
    assert "Start training from iteration 0 to 2" in log and "weights only" in log
    assert not (copy / "model_0000002.pth").exists()  # deleted; this 2-iteration run saves only model_final
    assert torch.load(copy / "model_final.pth", weights_only=True)["iteration"] == 2
    assert yaml.safe_load((copy / "config.yaml").read_text())["SOLVER"]["MAX_ITER"] == 2
    events = set(glob.glob(str(copy / "events.out.tfevents.*")))
    assert len(events) == 1 and not events & old_events
    assert (copy / "log.txt").read_text().startswith(before["log.txt"][0].decode())


def test_test_net_and_predictor_and_demo(trained, tmp_path, caplog):
    out = trained["out"]
    proc = run([os.path.join(TOOLS, "test_net.py"), "--config-file", trained["cfg"],
                "MODEL.WEIGHT", str(out / "model_final.pth"), "OUTPUT_DIR", str(tmp_path / "eval")])
    metrics = json.loads((tmp_path / "eval" / "inference" / "toy_val" / "metrics.json").read_text())
    assert set(metrics["bbox"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert "per-class" in (proc.stdout + proc.stderr).lower() or "circle" in proc.stdout + proc.stderr
    assert "input convention" not in proc.stdout + proc.stderr  # the config the weights were trained with

    from maskrcnn import Predictor
    from maskrcnn.data.image_io import read_image_rgb

    predictor = Predictor.from_config(trained["cfg"], weights=str(out / "model_final.pth"),
                                      opts=["MODEL.ROI_HEADS.SCORE_THRESH", "0.0"])
    image_path = sorted(glob.glob(str(trained["base"] / "data" / "shapes" / "val" / "*.png")))[0]
    image = read_image_rgb(image_path)
    result = predictor(image)
    n = result["boxes"].shape[0]
    assert result["scores"].shape == (n,) and result["labels"].shape == (n,)
    assert result["masks"].shape == (n,) + image.shape[:2] and result["masks"].dtype == torch.bool
    assert set(result["labels"].tolist()) <= {1, 2, 3}
    if n:
        assert float(result["boxes"][:, 2].max()) <= image.shape[1] + 1e-3
    same = predictor(image_path)
    assert torch.equal(same["boxes"], result["boxes"])
    # The checkpoint records the input convention it was trained with; another one is named.
    saved = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)["recommended_config"]
    assert saved["INPUT.PIXEL_MEAN"] == [0.5, 0.5, 0.5] and saved["INPUT.TO_BGR255"] is False
    with caplog.at_level("WARNING", logger="maskrcnn"):
        Predictor.from_config(trained["cfg"], weights=str(out / "model_final.pth"),
                              opts=["INPUT.PIXEL_MEAN", "[0.485, 0.456, 0.406]"])
    [warning] = [r.getMessage() for r in caplog.records if "input convention" in r.getMessage()]
    assert "INPUT.PIXEL_MEAN: the config has [0.485, 0.456, 0.406], the weights expect [0.5, 0.5, 0.5]" in warning
    assert 'INPUT.PIXEL_MEAN "[0.5, 0.5, 0.5]"' in warning and "TO_BGR255" not in warning

    run([os.path.join(TOOLS, "demo.py"), "--config-file", trained["cfg"], "--weights",
         str(out / "model_final.pth"), "--input", image_path, "--output", str(tmp_path / "demo"),
         "--confidence-threshold", "0.0"])
    pngs = glob.glob(str(tmp_path / "demo" / "*.png"))
    assert len(pngs) == 1
    from PIL import Image
    assert Image.open(pngs[0]).size == (image.shape[1], image.shape[0])


def test_non_finite_loss_stops_with_advice(tmp_path):
    out = tmp_path / "out"
    cfg = tiny_yaml(str(tmp_path / "data"), out)
    # A zero pixel std makes the inputs infinite: the first loss is not finite. (A frozen stem
    # without weights only adds its warning.)
    proc = run([os.path.join(TOOLS, "train_net.py"), "--config-file", cfg, "INPUT.PIXEL_STD", "[0.0, 0.0, 0.0]",
                "MODEL.BACKBONE.FREEZE_CONV_BODY_AT", "1"], check=False)
    assert proc.returncode != 0
    err = proc.stderr
    log = proc.stdout + err
    assert "starts from random weights" in log and "FREEZE_CONV_BODY_AT is 1: the stem stays at random values" in log
    assert "Non-finite loss at iteration 1" in err
    assert "loss_objectness" in err and "SOLVER.BASE_LR" in err and "WARMUP_ITERS" in err
    assert not (out / "model_final.pth").exists()


def test_random_init_warnings_name_what_cannot_train():
    from maskrcnn.config import get_cfg
    from maskrcnn.engine.run import warn_random_init
    cfg = get_cfg()  # maskrcnn-benchmark's defaults: FREEZE_CONV_BODY_AT 2, FrozenBN
    first, second = warn_random_init(cfg)
    assert "the stem and res2 stay at random values" in first and "FrozenBN" in second
    cfg.merge_from_list(["MODEL.BACKBONE.FREEZE_CONV_BODY_AT", 4, "MODEL.RESNETS.NORM", "GN"])
    assert warn_random_init(cfg) == ["MODEL.BACKBONE.FREEZE_CONV_BODY_AT is 4: the stem and res2..res4 stay at "
                                     "random values (set it to 0 to train them)"]
    cfg.merge_from_list(["MODEL.BACKBONE.FREEZE_CONV_BODY_AT", 0])
    assert warn_random_init(cfg) == []


def test_config_errors_name_the_key(tmp_path):
    cfg = tiny_yaml(str(tmp_path / "data"), tmp_path / "out")
    proc = run([os.path.join(TOOLS, "train_net.py"), "--config-file", cfg, "SOLVER.BASE_LRR", "0.1"], check=False)
    assert proc.returncode != 0 and "SOLVER.BASE_LR" in proc.stderr and "SOLVER.BASE_LRR" in proc.stderr
    proc = run([os.path.join(TOOLS, "train_net.py"), "--config-file", cfg,
                "MODEL.ROI_BOX_HEAD.NUM_CLASSES", "3"], check=False)
    assert proc.returncode != 0
    assert "NUM_CLASSES is 3" in proc.stderr and "3 categories" in proc.stderr and "4" in proc.stderr


def test_two_process_gloo_training_and_evaluation(tmp_path):
    out = tmp_path / "out"
    cfg = tiny_yaml(str(tmp_path / "data"), out, MAX_ITER=2, CHECKPOINT_PERIOD=100)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = run([os.path.join(TOOLS, "train_net.py"), "--config-file", cfg, "SEED", "-1"], launcher=torchrun)
    log = (out / "log.txt").read_text()
    # A drawn seed is shared by the ranks and recorded for reproduction.
    assert yaml.safe_load((out / "config.yaml").read_text())["SEED"] >= 0
    assert "Using 2 process(es)" in log
    assert log.count("Start training from iteration 0 to 2") == 1  # only rank 0 logs
    assert (out / "model_final.pth").is_file()
    metrics = json.loads((out / "inference" / "toy_val" / "metrics.json").read_text())
    assert "segm" in metrics
    results = json.loads((out / "inference" / "toy_val" / "coco_instances_results.json").read_text())
    # Predictions of both ranks were gathered: every val image is evaluated.
    import pycocotools.coco
    gt = pycocotools.coco.COCO(yaml.safe_load(open(cfg))["DATASETS"]["CATALOG"]["toy_val"]["ANN_FILE"])
    assert {r["image_id"] for r in results} <= set(gt.getImgIds())
    assert "Inference on toy_val: 6 images" in proc.stdout + proc.stderr + log

    # The legacy launcher passes --local-rank; evaluation gathers across the 2 processes.
    launch = [sys.executable, "-m", "torch.distributed.launch", "--nproc_per_node=2", f"--master_port={free_port()}"]
    proc = run([os.path.join(TOOLS, "test_net.py"), "--config-file", cfg, "MODEL.WEIGHT",
                str(out / "model_final.pth"), "OUTPUT_DIR", str(tmp_path / "eval")], launcher=launch)
    assert (tmp_path / "eval" / "inference" / "toy_val" / "metrics.json").is_file()
    assert "Inference on toy_val: 6 images" in proc.stdout + proc.stderr


def test_issue_command_line_with_the_r50_config(tmp_path):
    """The documented maskrcnn-benchmark command line, as written, then only what a CPU test
    must change: the data, no ImageNet download, one tiny iteration."""
    train_ann, train_img = ensure_shapes_dataset(str(tmp_path / "data"), "train", 4, 0)
    as_written = ["--config-file", os.path.join(ROOT, "configs", "e2e_mask_rcnn_R_50_FPN_1x.yaml"),
                  "SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.0025", "SOLVER.MAX_ITER", "720000",
                  "SOLVER.STEPS", "(480000, 640000)", "TEST.IMS_PER_BATCH", "1"]
    for_cpu = ["DATASETS.CATALOG.toy.ANN_FILE", train_ann, "DATASETS.CATALOG.toy.IMG_DIR", train_img,
               "DATASETS.TRAIN", "('toy',)", "DATASETS.TEST", "()", "MODEL.WEIGHT", "", "MODEL.DEVICE", "cpu",
               "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96", "SOLVER.MAX_ITER", "1",
               "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(tmp_path / "out")]
    proc = run([os.path.join(TOOLS, "train_net.py")] + as_written + for_cpu)
    log = proc.stdout + proc.stderr
    assert "iter: 1" in log
    saved = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert saved["SOLVER"]["STEPS"] == [480000, 640000] and saved["SOLVER"]["BASE_LR"] == 0.0025
    assert saved["MODEL"]["BACKBONE"]["CONV_BODY"] == "R-50-FPN" and saved["MODEL"]["MASK_ON"] is True
    ckpt = torch.load(tmp_path / "out" / "model_final.pth", map_location="cpu", weights_only=True)
    assert ckpt["model"]["roi_heads.box.predictor.cls_score.weight"].shape == (4, 1024)


def test_finetune_onto_fewer_classes_skips_the_class_layers(trained, tmp_path):
    """Weights trained on 3 categories initialise a 2-category model: the class-specific
    layers are skipped and listed, everything else loads, training runs."""
    src = yaml.safe_load(open(trained["cfg"]))["DATASETS"]["CATALOG"]["toy_train"]
    data = json.loads(open(src["ANN_FILE"]).read())
    data["categories"] = [c for c in data["categories"] if c["id"] != 3]
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] != 3]
    ann = tmp_path / "two_classes.json"
    ann.write_text(json.dumps(data))
    proc = run([os.path.join(TOOLS, "train_net.py"), "--config-file", trained["cfg"],
                "MODEL.WEIGHT", str(trained["out"] / "model_final.pth"),
                "DATASETS.CATALOG.two.ANN_FILE", str(ann), "DATASETS.CATALOG.two.IMG_DIR", src["IMG_DIR"],
                "DATASETS.TRAIN", "('two',)", "DATASETS.TEST", "()", "SOLVER.MAX_ITER", "1",
                "OUTPUT_DIR", str(tmp_path / "ft")])
    log = proc.stdout + proc.stderr
    assert "skipped" in log
    for name in ("roi_heads.box.predictor.cls_score.weight", "roi_heads.box.predictor.bbox_pred.weight",
                 "roi_heads.mask.predictor.mask_fcn_logits.weight"):
        assert name in log, name
    assert "Start training from iteration 0 to 1" in log
    ckpt = torch.load(tmp_path / "ft" / "model_final.pth", map_location="cpu", weights_only=True)
    assert ckpt["model"]["roi_heads.box.predictor.cls_score.weight"].shape[0] == 3  # 2 + background
    assert [c["name"] for c in ckpt["categories"]] == ["circle", "square"]


def test_reference_world_size_rescales_the_run(tmp_path):
    """A schedule written for 2 processes, run on 1: half the batch and LR, twice the iterations,
    and the run really goes to the scaled MAX_ITER (what config.yaml and the last checkpoint say)."""
    out = tmp_path / "out"
    cfg = tiny_yaml(str(tmp_path / "data"), out, MAX_ITER=2, STEPS=[1], WARMUP_ITERS=1,
                    CHECKPOINT_PERIOD=1, IMS_PER_BATCH=4, BASE_LR=0.02)
    proc = run([os.path.join(TOOLS, "train_net.py"), "--config-file", cfg, "DATASETS.TEST", "()",
                "SOLVER.REFERENCE_WORLD_SIZE", "2"])
    saved = yaml.safe_load((out / "config.yaml").read_text())["SOLVER"]
    assert saved["MAX_ITER"] == 4 and saved["IMS_PER_BATCH"] == 2 and list(saved["STEPS"]) == [2]
    assert abs(saved["BASE_LR"] - 0.01) < 1e-12 and saved["CHECKPOINT_PERIOD"] == 2
    assert torch.load(out / "model_final.pth", weights_only=True)["iteration"] == 4
    assert "REFERENCE_WORLD_SIZE" in proc.stdout + proc.stderr
