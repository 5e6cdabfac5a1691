"""The Hugging Face side: diffusers pipeline folders and back (diffusers_format.py, `python -m
gen.hub.diffusers_format`), with the custom-code wrappers that such a folder carries (remote/)."""
