import pickle
import warnings

import pytest

from maskrcnn.config.cfgnode import (
    CfgNode,
    ConfigError,
    ConfigFileError,
    ConfigKeyError,
    ConfigTypeError,
)


def make_cfg() -> CfgNode:
    c = CfgNode()
    c.MODEL = CfgNode()
    c.MODEL.MASK_ON = False
    c.MODEL.WEIGHT = ""
    c.MODEL.RPN = CfgNode()
    c.MODEL.RPN.NMS_THRESH = 0.7
    c.MODEL.RPN.ANCHOR_SIZES = (32, 64, 128, 256, 512)
    c.MODEL.BACKBONE = CfgNode()
    c.MODEL.BACKBONE.CONV_BODY = "R-50-C4"
    c.SOLVER = CfgNode()
    c.SOLVER.BASE_LR = 0.001
    c.SOLVER.MAX_ITER = 40000
    c.SOLVER.IMS_PER_BATCH = 16
    c.SOLVER.STEPS = (30000,)
    c.SOLVER.EXTRA = None
    c.DATASETS = CfgNode()
    c.DATASETS.TRAIN = ()
    c.DATASETS.TEST = ["a"]
    c.DATASETS.CATALOG = CfgNode(new_allowed=True)
    c.OUTPUT_DIR = "."
    return c


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_attribute_and_item_access():
    c = make_cfg()
    assert c.MODEL.RPN.NMS_THRESH == 0.7
    assert c["MODEL"]["RPN"]["NMS_THRESH"] is c.MODEL.RPN.NMS_THRESH
    c.MODEL.RPN.NMS_THRESH = 0.5
    assert c["MODEL"]["RPN"]["NMS_THRESH"] == 0.5
    with pytest.raises(AttributeError):
        c.MODEL.NOPE
    n = CfgNode({"A": {"B": {"C": 1}}})
    assert isinstance(n.A, CfgNode) and isinstance(n.A.B, CfgNode)
    assert n.A.B.C == 1


def test_freeze_and_defrost():
    c = make_cfg()
    c.freeze()
    assert c.is_frozen() and c.MODEL.RPN.is_frozen()
    with pytest.raises(AttributeError, match="NMS_THRESH"):
        c.MODEL.RPN.NMS_THRESH = 0.1
    with pytest.raises(AttributeError, match="NEW_KEY"):
        c.NEW_KEY = 1
    with pytest.raises(AttributeError):
        c.merge_from_list(["SOLVER.MAX_ITER", "5"])
    assert c.MODEL.RPN.NMS_THRESH == 0.7 and c.SOLVER.MAX_ITER == 40000
    c.defrost()
    assert not c.MODEL.RPN.is_frozen()
    c.MODEL.RPN.NMS_THRESH = 0.1
    assert c.MODEL.RPN.NMS_THRESH == 0.1


def test_clone_is_independent():
    c = make_cfg()
    c.register_renamed_key("MODEL.OLD", "MODEL.WEIGHT")
    d = c.clone()
    assert d == c and d is not c and d.MODEL is not c.MODEL
    d.MODEL.RPN.NMS_THRESH = 0.1
    d.DATASETS.TEST.append("b")
    assert c.MODEL.RPN.NMS_THRESH == 0.7 and c.DATASETS.TEST == ["a"]
    assert d.DATASETS.CATALOG.is_new_allowed()
    with pytest.raises(ConfigKeyError, match="MODEL.WEIGHT"):
        d.merge_from_list(["MODEL.OLD", "x"])
    c.freeze()
    assert c.clone().is_frozen()


def test_pickle_roundtrip():
    c = make_cfg()
    c.freeze()
    d = pickle.loads(pickle.dumps(c))
    assert d == c and d.is_frozen() and d.DATASETS.CATALOG.is_new_allowed()


def test_merge_from_file(tmp_path):
    c = make_cfg()
    f = write(tmp_path / "a.yaml", """
MODEL:
  MASK_ON: True
  RPN:
    ANCHOR_SIZES: [16, 32]
SOLVER:
  BASE_LR: 1        # int -> float
  STEPS: [10, 20]   # list -> tuple
DATASETS:
  TRAIN: [coco_train]
""")
    c.merge_from_file(str(f))
    assert c.MODEL.MASK_ON is True
    assert c.SOLVER.BASE_LR == 1.0 and isinstance(c.SOLVER.BASE_LR, float)
    assert c.SOLVER.STEPS == (10, 20) and isinstance(c.SOLVER.STEPS, tuple)
    assert c.MODEL.RPN.ANCHOR_SIZES == (16, 32)
    assert c.DATASETS.TRAIN == ("coco_train",)
    assert c.SOLVER.MAX_ITER == 40000  # untouched


def test_base_inheritance_two_levels(tmp_path):
    write(tmp_path / "base" / "root.yaml", "SOLVER:\n  BASE_LR: 0.1\n  MAX_ITER: 100\n"
          "OUTPUT_DIR: root\n")
    write(tmp_path / "base" / "mid.yaml",
          "_BASE_: root.yaml\nSOLVER:\n  MAX_ITER: 200\nMODEL:\n  WEIGHT: mid.pth\n")
    write(tmp_path / "other.yaml", "MODEL:\n  WEIGHT: other.pth\n  MASK_ON: true\n")
    leaf = write(tmp_path / "exp" / "leaf.yaml",
                 "_BASE_: [../base/mid.yaml, ../other.yaml]\nSOLVER:\n  BASE_LR: 0.02\n")
    c = make_cfg()
    c.merge_from_file(str(leaf))
    assert c.SOLVER.BASE_LR == 0.02      # leaf overrides root
    assert c.SOLVER.MAX_ITER == 200      # mid overrides root
    assert c.OUTPUT_DIR == "root"        # from root only
    assert c.MODEL.WEIGHT == "other.pth"  # later base overrides earlier base
    assert c.MODEL.MASK_ON is True


def test_base_absolute_path(tmp_path):
    base = write(tmp_path / "b.yaml", "SOLVER:\n  MAX_ITER: 7\n")
    leaf = write(tmp_path / "sub" / "l.yaml", f"_BASE_: {base.resolve()}\n")
    c = make_cfg()
    c.merge_from_file(str(leaf))
    assert c.SOLVER.MAX_ITER == 7


def test_base_cycle_detected(tmp_path):
    write(tmp_path / "a.yaml", "_BASE_: b.yaml\n")
    write(tmp_path / "b.yaml", "_BASE_: a.yaml\n")
    with pytest.raises(ConfigFileError, match="[Cc]ycle"):
        make_cfg().merge_from_file(str(tmp_path / "a.yaml"))
    write(tmp_path / "self.yaml", "_BASE_: ./self.yaml\n")
    with pytest.raises(ConfigFileError, match="self.yaml"):
        make_cfg().merge_from_file(str(tmp_path / "self.yaml"))


def test_merge_from_list_command_line():
    c = make_cfg()
    c.merge_from_list(["SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.0025",
                       "SOLVER.MAX_ITER", "720000", "SOLVER.STEPS", "(480000, 640000)"])
    assert c.SOLVER.IMS_PER_BATCH == 2 and type(c.SOLVER.IMS_PER_BATCH) is int
    assert c.SOLVER.BASE_LR == 0.0025 and type(c.SOLVER.BASE_LR) is float
    assert c.SOLVER.MAX_ITER == 720000 and type(c.SOLVER.MAX_ITER) is int
    assert c.SOLVER.STEPS == (480000, 640000) and type(c.SOLVER.STEPS) is tuple


def test_merge_from_list_strings_bools_and_coercions():
    c = make_cfg()
    c.merge_from_list(["MODEL.BACKBONE.CONV_BODY", "R-50-FPN", "MODEL.WEIGHT", "out/m.pth",
                       "MODEL.MASK_ON", "True", "MODEL.RPN.NMS_THRESH", "1",
                       "DATASETS.TRAIN", "['a', 'b']", "OUTPUT_DIR", "123",
                       "SOLVER.EXTRA", "[1, 2]"])
    assert c.MODEL.BACKBONE.CONV_BODY == "R-50-FPN"
    assert c.MODEL.WEIGHT == "out/m.pth"
    assert c.MODEL.MASK_ON is True
    assert c.MODEL.RPN.NMS_THRESH == 1.0 and type(c.MODEL.RPN.NMS_THRESH) is float
    assert c.DATASETS.TRAIN == ("a", "b") and type(c.DATASETS.TRAIN) is tuple
    assert c.OUTPUT_DIR == "123"  # str default keeps the raw token
    assert c.SOLVER.EXTRA == [1, 2]  # None default accepts anything


def test_bare_dataset_name_is_a_one_element_tuple(tmp_path):
    """Issue 10 #5: ``DATASETS.TRAIN "name"`` (maskrcnn-benchmark habit) was a type error."""
    c = make_cfg()
    c.merge_from_list(["DATASETS.TRAIN", "coco_2017_train"])
    assert c.DATASETS.TRAIN == ("coco_2017_train",)
    c.merge_from_list(["DATASETS.TRAIN", '"my_set"'])  # quoted for the shell: still a name
    assert c.DATASETS.TRAIN == ("my_set",)
    c.merge_from_list(["DATASETS.TRAIN", ""])
    assert c.DATASETS.TRAIN == ()
    f = write(tmp_path / "bare.yaml", 'DATASETS:\n  TRAIN: "coco_2017_train"\n')
    c.merge_from_file(str(f))
    assert c.DATASETS.TRAIN == ("coco_2017_train",) and type(c.DATASETS.TRAIN) is tuple
    # the real defaults: DATASETS.TRAIN and DATASETS.TEST, from a file and the command line
    from maskrcnn.config import load_cfg

    f = write(tmp_path / "real.yaml", "DATASETS:\n  TRAIN: coco_2017_train\n  TEST: coco_2017_val\n")
    cfg = load_cfg(str(f), ["DATASETS.TEST", "my_val"])
    assert cfg.DATASETS.TRAIN == ("coco_2017_train",) and cfg.DATASETS.TEST == ("my_val",)
    # only tuples of names: a string for numbers stays an error naming the key
    for key in ("SOLVER.STEPS", "MODEL.RPN.ANCHOR_SIZES"):
        with pytest.raises(ConfigTypeError, match=f"{key}.*expected tuple, got str"):
            make_cfg().merge_from_list([key, "many"])


def test_merge_from_list_odd_length():
    with pytest.raises(ValueError, match="even"):
        make_cfg().merge_from_list(["SOLVER.MAX_ITER"])


@pytest.mark.parametrize("key,suggestion", [
    ("SOLVER.BASE_LRR", "SOLVER.BASE_LR"),
    ("MODEL.RPN.NMS_TRESH", "MODEL.RPN.NMS_THRESH"),
])
def test_unknown_key_from_list(key, suggestion):
    with pytest.raises(KeyError) as info:
        make_cfg().merge_from_list([key, "1"])
    msg = str(info.value)
    assert key in msg and f"'{suggestion}'" in msg and "command line" in msg
    assert not msg.startswith('"')  # not wrapped by KeyError's repr


def test_unknown_key_from_file(tmp_path):
    f = write(tmp_path / "bad_key.yaml", "MODEL:\n  RPN:\n    NMS_TRESH: 0.5\n")
    with pytest.raises(ConfigKeyError) as info:
        make_cfg().merge_from_file(str(f))
    msg = str(info.value)
    assert "MODEL.RPN.NMS_TRESH" in msg and "MODEL.RPN.NMS_THRESH" in msg
    assert "bad_key.yaml" in msg


def test_unknown_intermediate_key_from_list():
    with pytest.raises(ConfigKeyError, match="MODEL.RPNN"):
        make_cfg().merge_from_list(["MODEL.RPNN.NMS_THRESH", "0.1"])


@pytest.mark.parametrize("key,value,expected,given", [
    ("SOLVER.MAX_ITER", "1.5", "int", "float"),
    ("SOLVER.MAX_ITER", "True", "int", "bool"),
    ("SOLVER.BASE_LR", "False", "float", "bool"),
    ("MODEL.MASK_ON", "1", "bool", "int"),
    ("SOLVER.STEPS", "5", "tuple", "int"),
    ("MODEL.RPN", "0.5", "CfgNode", "float"),
    ("MODEL.RPN.NMS_THRESH.X", "1", "float", "CfgNode"),
])
def test_wrong_type_from_list(key, value, expected, given):
    with pytest.raises(ValueError) as info:
        make_cfg().merge_from_list([key, value])
    assert isinstance(info.value, ConfigTypeError)
    msg = str(info.value)
    assert key.rsplit(".X", 1)[0] in msg and f"expected {expected}" in msg
    assert f"got {given}" in msg and "command line" in msg


def test_wrong_type_from_file(tmp_path):
    f = write(tmp_path / "t.yaml", "SOLVER:\n  BASE_LR: fast\n")
    with pytest.raises(ConfigTypeError) as info:
        make_cfg().merge_from_file(str(f))
    msg = str(info.value)
    for part in ("SOLVER.BASE_LR", "expected float", "got str", "'fast'", "t.yaml"):
        assert part in msg
    f2 = write(tmp_path / "t2.yaml", "MODEL:\n  MASK_ON:\n    X: 1\n")
    with pytest.raises(ConfigTypeError, match="MODEL.MASK_ON.*expected bool.*got CfgNode"):
        make_cfg().merge_from_file(str(f2))
    f3 = write(tmp_path / "t3.yaml", "SOLVER: 3\n")
    with pytest.raises(ConfigTypeError, match="SOLVER.*expected CfgNode.*got int"):
        make_cfg().merge_from_file(str(f3))


def test_new_allowed_catalog_via_yaml(tmp_path):
    f = write(tmp_path / "cat.yaml", "DATASETS:\n  CATALOG:\n    my_train:\n"
              "      ANN_FILE: x.json\n      IMG_DIR: imgs\n  TRAIN: [my_train]\n")
    c = make_cfg()
    c.merge_from_file(str(f))
    assert c.DATASETS.CATALOG.my_train.ANN_FILE == "x.json"
    assert c.DATASETS.CATALOG.my_train.IMG_DIR == "imgs"
    assert isinstance(c.DATASETS.CATALOG.my_train, CfgNode)
    assert c.DATASETS.CATALOG.my_train.is_new_allowed()
    with pytest.raises(ConfigKeyError):  # new keys elsewhere still rejected
        c.merge_from_list(["DATASETS.NEW", "1"])


def test_new_allowed_catalog_via_command_line():
    c = make_cfg()
    c.merge_from_list(["DATASETS.CATALOG.my_train.ANN_FILE", "x.json",
                       "DATASETS.CATALOG.my_train.IMG_DIR", "data/imgs"])
    node = c.DATASETS.CATALOG.my_train
    assert isinstance(node, CfgNode) and node.is_new_allowed()
    assert node == {"ANN_FILE": "x.json", "IMG_DIR": "data/imgs"}


def test_merge_from_other_cfg():
    c = make_cfg()
    other = CfgNode({"SOLVER": {"MAX_ITER": 3, "STEPS": [1, 2]}})
    c.merge_from_other_cfg(other)
    assert c.SOLVER.MAX_ITER == 3 and c.SOLVER.STEPS == (1, 2)
    with pytest.raises(ConfigKeyError, match="SOLVER.NOPE"):
        c.merge_from_other_cfg({"SOLVER": {"NOPE": 1}})


def test_dump_and_reload(tmp_path):
    c = make_cfg()
    c.merge_from_list(["SOLVER.STEPS", "(1, 2)", "DATASETS.TRAIN", "('x',)",
                       "DATASETS.CATALOG.x.ANN_FILE", "x.json", "SOLVER.BASE_LR", "1e-05"])
    text = c.dump()
    assert "(" not in text and "!!python" not in text
    path = tmp_path / "dump.yaml"
    c.save(str(path))
    assert path.read_text() == text
    d = make_cfg()
    d.merge_from_file(str(path))
    assert d == c
    assert d.SOLVER.STEPS == (1, 2) and type(d.SOLVER.STEPS) is tuple
    assert d != make_cfg()
    assert "NMS_THRESH: 0.7" in str(c)


@pytest.mark.parametrize("content,needle", [
    ("SOLVER: [unclosed\n", "Invalid YAML"),
    ("- a\n- b\n", "mapping"),
])
def test_bad_yaml_names_file(tmp_path, content, needle):
    f = write(tmp_path / "broken.yaml", content)
    with pytest.raises(ConfigFileError) as info:
        make_cfg().merge_from_file(str(f))
    assert str(f) in str(info.value) and needle in str(info.value)


def test_missing_file_names_path(tmp_path):
    leaf = write(tmp_path / "leaf.yaml", "_BASE_: missing_base.yaml\n")
    with pytest.raises(ConfigFileError, match="missing_base.yaml"):
        make_cfg().merge_from_file(str(leaf))
    with pytest.raises(ConfigError, match="nothere.yaml"):
        make_cfg().merge_from_file(str(tmp_path / "nothere.yaml"))


def test_empty_file_is_noop(tmp_path):
    c = make_cfg()
    c.merge_from_file(str(write(tmp_path / "e.yaml", "")))
    assert c == make_cfg()


def test_renamed_and_deprecated_keys(tmp_path):
    c = make_cfg()
    c.register_renamed_key("MODEL.RPN.NMS", "MODEL.RPN.NMS_THRESH")
    c.register_deprecated_key("SOLVER.OLD_FLAG")
    with pytest.raises(ConfigKeyError, match="MODEL.RPN.NMS_THRESH"):
        c.merge_from_list(["MODEL.RPN.NMS", "0.3"])
    f = write(tmp_path / "r.yaml", "MODEL:\n  RPN:\n    NMS: 0.3\n")
    with pytest.raises(ConfigKeyError, match="r.yaml"):
        c.merge_from_file(str(f))
    with pytest.warns(UserWarning, match="SOLVER.OLD_FLAG"):
        c.merge_from_list(["SOLVER.OLD_FLAG", "1", "SOLVER.MAX_ITER", "9"])
    assert "OLD_FLAG" not in c.SOLVER and c.SOLVER.MAX_ITER == 9
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c.merge_from_list(["SOLVER.MAX_ITER", "10"])  # no warning for normal keys
