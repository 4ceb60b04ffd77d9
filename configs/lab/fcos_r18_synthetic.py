_base_ = "dw_r18_synthetic.py"
loss = dict(_replace_=True, type="fcos", center_radius=1.5, focal_alpha=0.25, focal_gamma=2.0)
