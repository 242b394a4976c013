"""Offline build of the shipped models: ``python -m models.build`` (``make models``)."""
