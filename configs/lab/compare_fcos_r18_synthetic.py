# The FCOS baseline of lab/compare.py: configs/lab/compare_r18_synthetic.py with FCOS's loss.
_base_ = "compare_r18_synthetic.py"
loss = dict(_replace_=True, type="fcos", center_radius=1.5, focal_alpha=0.25, focal_gamma=2.0)
