"""The data sources that data.type names: "coco" built in, others registered by the modules a config
lists in custom_imports (the lab's "synthetic"), and the errors that say which and how."""
import pytest

from dwdet.config import Config
from dwdet.data import data_source, data_sources, register_data_source
from dwdet.engine.builders import split_files


def config(data: dict, custom_imports: list | None = None) -> Config:
    return Config({"data": data, **({"custom_imports": custom_imports} if custom_imports is not None else {})})


def test_coco_is_built_in():
    assert "coco" in data_sources()
    cfg = config({"type": "coco", "root": "data/coco", "val_images": "val2017",
                  "val_ann": "annotations/instances_val2017.json"})
    assert split_files(cfg, "val") == ("data/coco/val2017", "data/coco/annotations/instances_val2017.json")


def test_an_unknown_type_names_the_key_the_known_types_and_custom_imports():
    with pytest.raises(ValueError, match=r"config key data.type is 'shapes', which no data source has registered; "
                                         r"known data sources: .*coco.*this config has no custom_imports: a data "
                                         r"source is registered by a module that the config lists in custom_imports"):
        split_files(config({"type": "shapes"}, []), "train")
    with pytest.raises(ValueError, match=r"'shapes', which no data source .* \(after importing custom_imports "
                                         r"\['lab.synthetic'\]\)"):
        data_source("shapes", ["lab.synthetic"])


def test_a_name_is_registered_once():
    @register_data_source("test_once")
    def first(data, split):
        return "a", "b"

    register_data_source("test_once")(first)  # the same function again (a reloaded module): no change
    with pytest.raises(ValueError, match=r"data source 'test_once' is already registered by .*first; .*second cannot"):
        @register_data_source("test_once")
        def second(data, split):
            return "c", "d"
    assert data_source("test_once") is first


def test_the_lab_registers_synthetic_with_the_paths_of_ensure_synthetic(tmp_path):
    from lab.synthetic import ensure_synthetic
    params = dict(num_train=2, num_val=1, num_test=1, image_size=64)
    cfg = config({"type": "synthetic", "root": str(tmp_path / "s"), "seed": 3, "params": params}, ["lab.synthetic"])
    for split in ("train", "val", "test"):
        expected = ensure_synthetic(tmp_path / "s", seed=3, **params)[split]
        assert split_files(cfg, split) == (str(expected.images), str(expected.annotations))
