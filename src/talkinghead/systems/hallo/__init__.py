"""Hallo (2024): hierarchical audio-driven visual synthesis; its net, pipeline, release engine, parity check and
training net."""
