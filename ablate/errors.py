"""The errors of bad input, raised where it is found (often at start-up) and printed by the commands as one line
(ablate.cli). Plain Python, so any module can raise them without loading what the others need."""


class ConfigError(ValueError):
    """A run config value is not allowed."""


class DataError(ValueError):
    """A data root, folder or file cannot be used."""
