_base_ = "dw_r18_synthetic.py"
model = dict(refine=True)
