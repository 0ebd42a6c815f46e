"""Distillation, evaluation and ONNX export of the multilingual student."""

# importing `service` installs the filter of transformers' false "fix_mistral_regex" warning
# (service/tokenizer_warning.py): training and serving load the same model folders
import service  # noqa: F401
