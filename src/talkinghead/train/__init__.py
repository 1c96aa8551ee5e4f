"""Training, shared by every system: preprocessing into shards, datasets, the seed papers' losses, the adapter
contract and the DiT adapter base, the accelerate trainer. Each system's own adapter lives in
systems/<name>/train.py (or systems/unet_adapter.py for the reference-net UNets), found by train/adapters.py."""
