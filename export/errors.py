"""The exporter's one error type."""


class ExportError(RuntimeError):
    """An export that cannot go on; nothing is written to the repository."""
