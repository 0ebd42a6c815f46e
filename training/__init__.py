"""Distillation, evaluation and ONNX export of the multilingual student."""

from training import tokenizer_warning

# transformers' false "fix_mistral_regex" warning on every load of a model folder saved by
# transformers 4.57.3+ (the e5 student, every trained student): measured and explained in
# training/tokenizer_warning.py
tokenizer_warning.install()
