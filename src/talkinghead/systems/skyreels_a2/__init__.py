"""SkyReels-A2 (2025): the Wan2.1 composition transformer driven by reference images and a prompt."""
