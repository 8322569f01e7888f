"""Testimony capture kiosk: record an interview once, let the court follow it live, seal it to the court."""

__version__ = "0.1.0"
