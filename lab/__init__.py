"""The synthetic-benchmark lab: the benchmark generators (shapes80, patterns80), backbone pretraining
and probing, the tree-crown data, and the comparison of label assignments (studies, runner, report).

It is no part of the dwdet package (not in the wheel): it runs from a checkout, as
``python -m lab.<module>`` from the repository root. It imports dwdet, never the reverse; its data
reach dwdet through the data sources that ``lab.synthetic`` registers, which a config asks for with
``custom_imports = ["lab.synthetic"]``.
"""
