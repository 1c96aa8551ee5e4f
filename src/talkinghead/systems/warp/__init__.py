"""Warp: talkinghead's CPU engine (no weights): face landmarks -> audio-driven motion track -> mesh-warp renderer,
streaming."""
