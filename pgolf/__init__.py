"""pgolf: parameter-constrained language modelling (OpenAI Parameter Golf) as one tested toolkit."""

__version__ = "0.1.0"
