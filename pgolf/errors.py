"""Errors a user can cause. The CLI turns each into one line on stderr and a non-zero exit.

Anything else that escapes is a bug in pgolf and keeps its traceback.
"""


class PgolfError(Exception):
    """A user-caused error (bad path, corrupt file, unknown key, over budget...)."""

    exit_code = 2


class ConfigError(PgolfError):
    """Unknown config key, unparsable value, or a value that fails its check."""


class DataError(PgolfError):
    """Missing, empty, corrupt or inconsistent data (shards, sidecars, tokenizer, corpus)."""


class ArtifactError(PgolfError):
    """Artifact missing, truncated, altered (checksum) or of an unknown format."""


class BudgetError(PgolfError):
    """The artifact does not fit its byte budget, or an evaluation cannot finish inside its time budget."""

    exit_code = 3


class TrainingError(PgolfError):
    """Training cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""

    exit_code = 4
