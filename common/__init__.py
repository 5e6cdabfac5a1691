"""What both `gen` (models, training, sampling) and `fid` (scoring) stand on, and nothing about generation:
errors, atomic file writing, the command-line conventions, the digit arrays and ADM's image crop.

The layering is one way: `gen` imports `fid` and `common`, `fid` imports `common`, and `common` imports neither
(tests/test_layering.py holds it).
"""
