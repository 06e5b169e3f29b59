"""The ground floor every part stands on: settings, errors, logs, metrics and API keys here; the job protocol
in ``jobqueue``, the model contract in ``models``, users' files in ``files``."""

__version__ = "0.1.0"
