"""pgolf.submit: the submission side (the single-file bundle, the records folder, significance, review).

Nothing on the training path imports this package (``tests/test_layering.py``).
"""
