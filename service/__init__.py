"""polyglot-embed: multilingual embedding service."""

from service import tokenizer_warning

__version__ = "0.1.0"

# transformers' false "fix_mistral_regex" warning on every load of a model folder saved by
# transformers 4.57.3+ (the e5 student, every trained student): measured and explained in
# service/tokenizer_warning.py
tokenizer_warning.install()
