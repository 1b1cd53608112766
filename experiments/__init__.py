"""The experiment specs shipped with lt, installed as package data (``ltcli.presets``)."""
