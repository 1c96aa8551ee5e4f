"""EchoMimic (2024): audio- and landmark-driven portrait animation; its net, pipeline, release engine, parity check
and training net."""
