# What every config of the lab starts from: the paper's DW detector on COCO (its model, loss and
# schedule; each lab config sets its own data and sizes), and the lab's data sources. Importing
# lab.synthetic registers data.type="synthetic" with dwdet; `lab` is importable from the repository
# root (python -m ..., tools/*.py) or with the checkout on PYTHONPATH.
_base_ = "../../dw_r50_fpn_1x_coco.py"
custom_imports = ["lab.synthetic"]
