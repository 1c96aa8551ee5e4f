"""Audio -> per-frame motion parameters (the control surface): visemes, blinks, head, gaze."""
from .track import MotionGenerator, motion_track

__all__ = ["MotionGenerator", "motion_track"]
