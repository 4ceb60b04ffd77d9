"""The command-line programs (``dwdet-train``, ``dwdet-test``, ``dwdet-infer``,
``dwdet-convert-mmdet``); ``tools/*.py`` run the same ``main`` functions from a checkout."""
