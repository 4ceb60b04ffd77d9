"""Config files: overrides with type checks, inheritance, saving and reloading."""
import json
import sys
import textwrap
import warnings

import pytest

from dwdet.config import Config, ConfigError, load_config, save_config

BASE = """
import math

model = dict(backbone="resnet50", depth=50, frozen_stages=1, refine=False, norm=dict(type="GN", groups=32))
train = dict(lr=0.01, epochs=12, lr_steps=(8, 11), mean=[0.485, 0.456, 0.406], resume=None, amp="none")
_private = 3

def helper():
    return 1
"""


def write(folder, name, text):
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def base(tmp_path):
    return write(tmp_path, "base.py", BASE)


def test_loads_sections_and_skips_private_names_modules_and_functions(base):
    cfg = load_config(base)
    assert set(cfg) == {"model", "train", "custom_imports"} and cfg.custom_imports == []  # the one key of every config
    assert cfg.model.norm.groups == 32 and cfg["train"]["lr"] == 0.01
    assert isinstance(cfg.model, Config)


@pytest.mark.parametrize("override,key,expected", [
    ("train.lr=0.02", ("train", "lr"), 0.02),
    ("train.lr=1", ("train", "lr"), 1.0),  # an int where a float is expected is converted
    ("train.epochs=24", ("train", "epochs"), 24),
    ("model.refine=True", ("model", "refine"), True),
    ("model.backbone=resnet18", ("model", "backbone"), "resnet18"),
    ("model.backbone=101", ("model", "backbone"), "101"),  # a string key keeps the text
    ("model.backbone=None", ("model", "backbone"), None),  # but None unsets it (e.g. model.backbone_weights)
    ("train.lr_steps=[16,22]", ("train", "lr_steps"), (16, 22)),  # the existing container type is kept
    ("train.lr_steps=8", ("train", "lr_steps"), (8,)),  # a scalar for a sequence key: a sequence of one
    ("train.mean=0.5", ("train", "mean"), [0.5]),
    ("train.mean=(0,0.5,1)", ("train", "mean"), [0.0, 0.5, 1.0]),
    ("train.resume=work_dirs/run/last.pth", ("train", "resume"), "work_dirs/run/last.pth"),  # None takes anything
    ("model.norm.groups=16", ("model", "norm", "groups"), 16),
    ("model.norm={'groups': 8}", ("model", "norm", "groups"), 8),
])
def test_override_values(base, override, key, expected):
    cfg = load_config(base, [override])
    value = cfg
    for part in key:
        value = value[part]
    assert value == expected and type(value) is type(expected)
    assert cfg.model.norm.type == "GN"  # untouched siblings survive


@pytest.mark.parametrize("override,message", [
    ("train.lrr=0.1", r"unknown config key 'train.lrr'; did you mean 'lr'\?"),
    ("trian.lr=0.1", r"unknown config key 'trian'; did you mean 'train'\?"),
    ("model.norm.kind=BN", r"unknown config key 'model.norm.kind'"),
    ("model.depth.x=1", r"unknown config key 'model.depth.x': 'model.depth' is a value \(50\), not a section"),
    ("model.norm={'gropus': 8}", r"unknown config key 'model.norm.gropus'"),
    ("train.epochs=12.5", r"'train.epochs' expects int like 12, got float 12.5"),
    ("model.refine=1", r"'model.refine' expects bool like False, got int 1"),
    ("train.epochs=True", r"'train.epochs' expects int"),
    ("train.lr=fast", r"'train.lr' expects float like 0.01, got str 'fast'"),
    ("train.lr_steps=fast", r"'train.lr_steps\[0\]' expects int like 8, got str 'fast'"),
    ("train.lr_steps={'a': 1}", r"'train.lr_steps' expects tuple"),
    ("train.lr_steps=[8,11.5]", r"'train.lr_steps\[1\]' expects int"),
    ("model.norm=GN", r"'model.norm' expects dict"),
    ("train.lr", r"override 'train.lr' is not of the form key.sub=value"),
])
def test_override_errors_name_the_key(base, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(base, [override])


def test_an_empty_section_takes_new_keys_from_the_command_line_and_a_full_one_does_not(tmp_path):
    path = tmp_path / "c.py"
    path.write_text("train = dict(loss_weights={}, lr=0.1)\nmodel = dict(sizes=dict(a=1))\n")
    cfg = load_config(path, ["train.loss_weights={'loss_box': 2.0}"])
    assert cfg.train.loss_weights.to_dict() == {"loss_box": 2.0}
    with pytest.raises(ConfigError, match="unknown config key 'model.sizes.b'"):
        load_config(path, ["model.sizes={'b': 2}"])


def test_inheritance_merges_sections_and_checks_types(tmp_path, base):
    write(tmp_path, "mid.py", """
        _base_ = "base.py"
        model = dict(refine=True, norm=dict(groups=16))
        train = dict(amp="bf16")
    """)
    sub = tmp_path / "sub"
    sub.mkdir()
    child = write(sub, "child.py", """
        _base_ = ["../mid.py"]
        train = dict(lr=0.02, epochs=24)
    """)
    cfg = load_config(child, ["train.lr_steps=(16,22)"])
    assert cfg.model.to_dict() == {"backbone": "resnet50", "depth": 50, "frozen_stages": 1, "refine": True,
                                   "norm": {"type": "GN", "groups": 16}}
    assert cfg.train.lr == 0.02 and cfg.train.epochs == 24 and cfg.train.lr_steps == (16, 22)
    assert cfg.train.mean == [0.485, 0.456, 0.406] and cfg.train.amp == "bf16"

    bad = write(tmp_path, "bad.py", '_base_ = "base.py"\ntrain = dict(epochs="twelve")\n')
    with pytest.raises(ConfigError, match=r"'train.epochs' expects int.*bad.py"):
        load_config(bad)


@pytest.mark.parametrize("text,message", [
    ('train = dict(lrr=0.05, epochs=1)', r"unknown config key 'train.lrr'; did you mean 'lr'\?.*\(in .*child.py\)"),
    ('train = dict(epoch=1)', r"unknown config key 'train.epoch'; did you mean 'epochs'\?"),
    ('modle = dict(refine=True)', r"unknown config key 'modle'; did you mean 'model'\?"),
    ('model = dict(norm=dict(gruops=8))', r"unknown config key 'model.norm.gruops'; did you mean 'groups'\?"),
])
def test_a_file_that_inherits_cannot_add_keys_as_on_the_command_line(tmp_path, base, text, message):
    child = write(tmp_path, "child.py", f'_base_ = "base.py"\n{text}\n')
    with pytest.raises(ConfigError, match=message):
        load_config(child)


def test_sections_that_a_base_leaves_empty_or_that_a_child_replaces_take_new_keys(tmp_path, base):
    write(tmp_path, "root.py", 'data = dict(type="synthetic", params=dict())\n')
    mid = write(tmp_path, "mid.py", '_base_ = "root.py"\ndata = dict(params=dict(colours=10))\n')
    child = write(tmp_path, "child.py", '_base_ = "mid.py"\ndata = dict(params=dict(patterns=True))\n')
    assert load_config(child).data.params.to_dict() == {"colours": 10, "patterns": True}
    assert load_config(mid).data.params.to_dict() == {"colours": 10}
    replaced = write(tmp_path, "replaced.py", '_base_ = "base.py"\nmodel = dict(_replace_=True, kind="other")\n')
    assert load_config(replaced).model.to_dict() == {"kind": "other"}
    bad = write(tmp_path, "bad.py", '_base_ = "mid.py"\ndata = dict(typ="coco")\n')
    with pytest.raises(ConfigError, match=r"'data.typ'; did you mean 'type'"):
        load_config(bad)


@pytest.mark.parametrize("marker", ["_replace_", "_delete_"])  # ours, and MMEngine's (deprecated) spelling
def test_several_bases_merge_in_order_and_replace_marker(tmp_path, base, marker):
    write(tmp_path, "other.py", 'model = dict(depth=101, extra=True)\n')
    child = write(tmp_path, "child.py", f"""
        _base_ = ["base.py", "other.py"]
        model = dict(norm=dict({marker}=True, type="BN"))
    """)
    if marker == "_delete_":
        with pytest.warns(FutureWarning, match=r"'_delete_' in model.norm \(in .*child.py\): write '_replace_=True'"):
            cfg = load_config(child)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            cfg = load_config(child)
    assert cfg.model.depth == 101 and cfg.model.extra is True
    assert cfg.model.norm.to_dict() == {"type": "BN"}


def test_inheritance_loop_and_missing_base_are_errors(tmp_path):
    write(tmp_path, "a.py", '_base_ = "b.py"\n')
    write(tmp_path, "b.py", '_base_ = "a.py"\n')
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "a.py")
    write(tmp_path, "c.py", '_base_ = "missing.py"\n')
    with pytest.raises(ConfigError, match="not found: .*missing.py"):
        load_config(tmp_path / "c.py")


def test_saved_json_reloads_equal_and_still_type_checks(tmp_path, base):
    cfg = load_config(base, ["train.lr=0.04"])
    save_config(cfg, tmp_path / "config.json")
    again = load_config(tmp_path / "config.json", ["train.lr_steps=[1,2]"])
    assert again.train.lr == 0.04 and again.train.lr_steps == [1, 2]
    # equal, apart from the keys of dwdet's own configs that this toy one lacks (added as migration does)
    assert {k: again.model[k] for k in cfg.model} == cfg.model.to_dict()
    with pytest.raises(ConfigError, match="'train.epochs' expects int"):
        load_config(tmp_path / "config.json", ["train.epochs=x"])


def test_config_is_read_only_and_missing_keys_are_named(base):
    cfg = load_config(base)
    with pytest.raises(AttributeError, match="read-only"):
        cfg.train = {}
    with pytest.raises(AttributeError, match="config has no key 'model.norm.eps'"):
        cfg.model.norm.eps
    cfg.to_dict()["train"]["lr"] = 1.0
    assert cfg.train.lr == 0.01  # to_dict is a copy


def test_overrides_apply_to_a_resolved_dict_and_the_printed_config_reloads(tmp_path, base):
    from dwdet.config import apply_overrides, format_config
    saved = load_config(base).to_dict()
    cfg = apply_overrides(saved, ["train.lr=0.5"])
    assert cfg.train.lr == 0.5 and saved["train"]["lr"] == 0.01  # the input is not modified
    (tmp_path / "printed.json").write_text(format_config(cfg))
    from dwdet.engine.compat import migrate_config  # a saved config gains the keys this toy one lacks
    assert load_config(tmp_path / "printed.json").to_dict() == migrate_config(
        {**saved, "train": {**saved["train"], "lr": 0.5, "lr_steps": [8, 11]}})
    with pytest.raises(ConfigError, match="unknown config key 'train.lrr'"):
        apply_overrides(saved, ["train.lrr=1"])


def test_merge_is_the_in_code_edit_checked_like_a_child_file(base):
    cfg = load_config(base)
    edited = cfg.merge({"model": {"backbone": None, "norm": {"groups": 16}}, "train": {"lr": 1}})
    assert edited.model.backbone is None and edited.model.norm.to_dict() == {"type": "GN", "groups": 16}
    assert edited.train.lr == 1.0 and isinstance(edited.train.lr, float)
    assert cfg.model.backbone == "resnet50" and cfg.train.lr == 0.01  # a new Config; the old one is unchanged
    assert cfg.model.merge({"depth": 101}).depth == 101  # a section merges its own keys
    assert cfg.merge({"model": {"norm": {"_replace_": True, "type": "BN"}}}).model.norm.to_dict() == {"type": "BN"}
    with pytest.raises(ConfigError, match=r"unknown config key 'model.norm.gruops'; did you mean 'groups'"):
        cfg.merge({"model": {"norm": {"gruops": 8}}})
    with pytest.raises(ConfigError, match=r"'train.epochs' expects int like 12, got str 'x' \(from Config.merge\)"):
        cfg.merge({"train": {"epochs": "x"}})
    with pytest.raises(ConfigError, match=r"unknown config key 'model.depht'"):
        cfg.model.merge({"depht": 101})


SCHEDULE = 'train = dict(optimizer="sgd", sgd_momentum=0.9, adamw_betas=(0.9, 0.999), lr=0.01)\n'


def test_a_renamed_key_still_loads_with_a_warning_from_a_file_and_an_override(tmp_path):
    write(tmp_path, "schedule.py", SCHEDULE)
    old = write(tmp_path, "old.py", '_base_ = "schedule.py"\ntrain = dict(optimizer="adamw", momentum=0.85)\n')
    with pytest.warns(FutureWarning, match=r"'train.momentum' \(in .*old.py\) is now 'train.sgd_momentum' and "
                                           r"'train.adamw_betas'"):
        cfg = load_config(old)
    assert cfg.train.to_dict() == {"optimizer": "adamw", "sgd_momentum": 0.85, "adamw_betas": (0.85, 0.999), "lr": 0.01}
    with pytest.warns(FutureWarning, match=r"'train.momentum' \(in the command line\)"):
        cfg = load_config(tmp_path / "schedule.py", ["train.momentum=0.5"])
    assert cfg.train.sgd_momentum == 0.5 and cfg.train.adamw_betas == (0.5, 0.999)
    with pytest.raises(ConfigError, match="'train.sgd_momentum' expects float"), pytest.warns(FutureWarning):
        load_config(tmp_path / "schedule.py", ["train.momentum=fast"])


def test_a_saved_config_of_an_older_dwdet_loads_under_the_new_names_silently(tmp_path):
    (tmp_path / "config.json").write_text('{"train": {"optimizer": "sgd", "momentum": 0.9, "lr": 0.01}}')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = load_config(tmp_path / "config.json", ["train.sgd_momentum=0.8"])
    assert {k: cfg.train[k] for k in ("optimizer", "sgd_momentum", "adamw_betas", "lr")} == {
        "optimizer": "sgd", "sgd_momentum": 0.8, "adamw_betas": (0.9, 0.999), "lr": 0.01}
    assert "momentum" not in cfg.train


def test_a_saved_config_of_an_older_dwdet_takes_overrides_of_keys_added_since(tmp_path):
    """e.g. an inference setting tried on a run trained before it existed, as it behaved then."""
    from dwdet.engine.compat import ADDED_KEYS
    (tmp_path / "config.json").write_text('{"model": {"score_thresh": 0.05}, "train": {"lr": 0.01}}')
    cfg = load_config(tmp_path / "config.json", ["model.objectness_power=4.0", "train.loss_weights={'loss_box': 2.0}"])
    assert cfg.model.objectness_power == 4.0 and cfg.train.loss_weights.to_dict() == {"loss_box": 2.0}
    assert load_config(tmp_path / "config.json").train.ema is ADDED_KEYS["train.ema"]


def test_a_saved_run_of_synthetic_data_from_before_custom_imports_finds_its_data_source(tmp_path):
    """Its data came from the generator that now lives in the lab: the module is imported for it."""
    from dwdet.data import data_source
    from dwdet.engine.compat import migrate_config
    saved = {"data": {"type": "synthetic", "root": "data/x"}, "train": {"lr": 0.01}}
    (tmp_path / "config.json").write_text(json.dumps(saved))
    cfg = load_config(tmp_path / "config.json")
    assert cfg.custom_imports == ["lab.synthetic"] and data_source("synthetic") is not None
    assert migrate_config(saved)["custom_imports"] == ["lab.synthetic"]
    (tmp_path / "coco.json").write_text(json.dumps({**saved, "data": {"type": "coco", "root": "r"}}))
    assert load_config(tmp_path / "coco.json").custom_imports == []


# ---- custom_imports -------------------------------------------------------------------------------

REGISTERING_MODULE = """
from dwdet.data import register_data_source

@register_data_source("{name}")
def split(data, split):
    return data["root"] + "/" + split, data["root"] + "/" + split + ".json"
"""


def test_custom_imports_are_imported_by_load_config_and_add_up_through_bases(tmp_path, monkeypatch):
    from dwdet.engine.builders import split_files
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("cfgtest_source_a", "cfgtest_source_b"):
        write(tmp_path, f"{name}.py", REGISTERING_MODULE.format(name=name))
        monkeypatch.delitem(sys.modules, name, raising=False)
    write(tmp_path, "root.py", 'custom_imports = ["cfgtest_source_a"]\ndata = dict(type="coco", root="r")\n')
    child = write(tmp_path, "child.py", '_base_ = "root.py"\ncustom_imports = ["cfgtest_source_b", "cfgtest_source_a"]\n'
                                        'data = dict(type="cfgtest_source_b")\n')
    assert "cfgtest_source_b" not in sys.modules
    cfg = load_config(child)
    assert cfg.custom_imports == ["cfgtest_source_a", "cfgtest_source_b"]  # the bases' first, each once
    assert {"cfgtest_source_a", "cfgtest_source_b"} <= set(sys.modules)
    assert split_files(cfg, "val") == ("r/val", "r/val.json")
    # saved and reloaded, the config imports the same modules
    save_config(cfg, tmp_path / "saved.json")
    assert load_config(tmp_path / "saved.json").custom_imports == ["cfgtest_source_a", "cfgtest_source_b"]


def test_custom_imports_typos_and_bad_values_are_named(tmp_path, base):
    child = write(tmp_path, "child.py", '_base_ = "base.py"\ncustom_import = ["lab.synthetic"]\n')
    with pytest.raises(ConfigError, match=r"unknown config key 'custom_import'; did you mean 'custom_imports'\?"):
        load_config(child)
    child = write(tmp_path, "child.py", '_base_ = "base.py"\ncustom_imports = "lab.synthetic"\n')
    with pytest.raises(ConfigError, match=r"config key 'custom_imports' \(in .*child.py\) must be a list of module "
                                          r"names"):
        load_config(child)


def test_a_custom_import_that_is_not_found_names_the_key_the_module_and_the_fix(tmp_path, base):
    child = write(tmp_path, "child.py", '_base_ = "base.py"\ncustom_imports = ["no_such_pkg.sources"]\n')
    with pytest.raises(ConfigError, match=r"config key custom_imports: cannot import module 'no_such_pkg.sources' "
                                          r"\(.*\).*repository root.*PYTHONPATH"):
        load_config(child)
    # the override adds a module to a config (or to a saved config of a dwdet before the key)
    with pytest.raises(ConfigError, match="cannot import module 'no_such_pkg'"):
        load_config(base, ["custom_imports=['no_such_pkg']"])


def test_a_custom_import_that_lacks_a_dependency_raises_its_own_error(tmp_path, base, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    write(tmp_path, "cfgtest_needs_more.py", "import cfgtest_missing_dependency\n")
    child = write(tmp_path, "child.py", '_base_ = "base.py"\ncustom_imports = ["cfgtest_needs_more"]\n')
    with pytest.raises(ModuleNotFoundError, match="cfgtest_missing_dependency"):
        load_config(child)
