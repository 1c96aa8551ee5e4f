"""Measurements of talking-head videos that need no hub weights."""
