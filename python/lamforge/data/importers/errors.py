"""The error every importer raises for bad input."""


class DataImportError(ValueError):
    """An input cannot be imported; the message names the file, the frame and the field."""
