"""SkyReels-A1 (2025): the landmark-guided CogVideoX portrait transformer; pipeline, release loader, training
adapter."""
