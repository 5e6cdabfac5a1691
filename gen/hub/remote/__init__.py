"""The code that a custom diffusers folder runs (gen.hub.diffusers_format.save_diffusers_pipeline copies these files
into it): `gen_transformer.py` into `transformer/`, `gen_pipeline.py` into the folder's root. Both are thin
wrappers that import this package, so the folder needs `gen` installed where it is loaded
(`pip install` of this project); they hold no model code of their own.
"""
