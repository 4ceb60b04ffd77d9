"""Every config fact has one source: the shipped configs resolve without a deprecated spelling or
key, each key of a section is an argument of the constructor that reads it, and where that
constructor has a default (its Python API), the config tree states the same value once."""
import dataclasses
import inspect
import math
import runpy
import warnings

import pytest

from dwdet.config import load_config
from dwdet.engine.loop import StepOptions
from dwdet.losses import LOSSES
from dwdet.models import build_fcos, build_torchvision_fcos
from tests.paths import ROOT

CONFIGS = ROOT / "configs"
# every shipped config, the lab's (configs/lab/) included, by its path under configs/
SHIPPED = sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.py") if "_base_" not in p.parts)
BASES = sorted((CONFIGS / "_base_").glob("*.py"))
MODEL_BUILDERS = {"fcos": build_fcos, "torchvision_fcos": build_torchvision_fcos}
# constructor arguments that no config sets, and why
NOT_CONFIG_KEYS = {
    "model": {"num_classes", "loss"},  # from the categories (builders.resolve_num_classes); from the loss section
    "loss": {"num_classes", "regress_ranges"},  # the model's; FCOS's follow the head's fixed strides
}


def arguments(function) -> dict[str, object]:
    """Each argument of ``function`` and its default (``inspect.Parameter.empty`` when it has none)."""
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.kind is not inspect.Parameter.VAR_KEYWORD}


def same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isinf(a):
        return a == b
    return a == b or (isinstance(b, (list, tuple)) and len(b) == 1 and same(a, b[0]))  # min_size=800 is (800,)


@pytest.fixture(scope="module")
def resolved():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a shipped config with a renamed key or '_delete_' would warn
        return {name: load_config(CONFIGS / name) for name in SHIPPED}


def test_the_lab_configs_are_found_and_import_the_lab():
    lab = [name for name in SHIPPED if name.startswith("lab/")]
    assert len(lab) >= 20 and "lab/dw_r10_patterns80.py" in lab and "own_data_cpu.py" in SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_a_synthetic_config_imports_the_module_that_registers_its_data(resolved, name):
    cfg = resolved[name]
    assert cfg.custom_imports == (["lab.synthetic"] if name.startswith("lab/") else [])
    assert cfg.data.type in ("coco", "synthetic") and (cfg.data.type == "coco" or name.startswith("lab/"))


def test_every_key_of_the_base_files_has_exactly_one_default():
    seen: dict[str, str] = {}
    for path in BASES:
        namespace = runpy.run_path(str(path))
        for section, values in namespace.items():
            if section.startswith("_") or not isinstance(values, dict):
                continue
            for key in values:
                dotted = f"{section}.{key}"
                assert dotted not in seen, f"{dotted} has a default in {seen[dotted]} and in {path.name}"
                seen[dotted] = path.name
    assert {"train.sgd_momentum", "train.adamw_betas", "train.log_interval", "model.num_classes"} <= set(seen)
    assert "train.momentum" not in seen


@pytest.mark.parametrize("name", SHIPPED)
def test_each_section_is_the_arguments_of_its_constructor(resolved, name):
    cfg = resolved[name]
    for section, constructor in (("model", MODEL_BUILDERS[cfg.model.type]), ("loss", LOSSES[cfg.loss.type])):
        expected = set(arguments(constructor)) - NOT_CONFIG_KEYS[section]
        keys = set(cfg[section]) - {"type", "num_classes"}
        assert keys == expected, f"{name}: {section} keys {sorted(keys ^ expected)} are not {constructor.__name__}'s"
    step_fields = {f.name for f in dataclasses.fields(StepOptions)}
    assert step_fields <= set(cfg.train)


@pytest.mark.parametrize("section,kind", [("model", "fcos"), ("model", "torchvision_fcos"),
                                          *(("loss", kind) for kind in sorted(LOSSES))])
def test_constructor_defaults_are_the_values_of_the_config_tree(resolved, section, kind):
    """A constructor's default (what a Python user gets) is the value of the config tree: the model's
    and DW's those of ``configs/_base_``, each other method's those of its COCO config, which
    states its loss in full (the lab configs change some on purpose, e.g. TOOD's warm-up)."""
    constructor = MODEL_BUILDERS[kind] if section == "model" else LOSSES[kind]
    config = "dw_r50_fpn_1x_coco.py" if section == "model" or kind == "dw" else f"{kind}_r50_fpn_1x_coco.py"
    values = resolved[config][section]
    assert section == "model" or values["type"] == kind
    for key, default in arguments(constructor).items():
        if key in NOT_CONFIG_KEYS[section] or default is inspect.Parameter.empty:
            continue
        if kind == "torchvision_fcos" and key == "center_sampling_radius":
            continue  # torchvision's own option, which no config sets
        assert same(default, values[key]), f"{constructor.__name__}'s default {key}={default!r}, {config}'s {values[key]!r}"


def test_step_options_take_every_value_from_the_config():
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(StepOptions))
    cfg = load_config(CONFIGS / "dw_r50_fpn_1x_coco.py", ["train.log_interval=7"])
    assert StepOptions.from_config(cfg.train).log_interval == 7
    assert StepOptions.from_config(load_config(CONFIGS / "dw_r50_fpn_1x_coco.py").train).log_interval == 50
