# The FCOS baseline on shapes80: the DW config with the FCOS loss.
_base_ = "dw_r10_shapes80.py"
loss = dict(_replace_=True, type="fcos", center_radius=1.5, focal_alpha=0.25, focal_gamma=2.0)
