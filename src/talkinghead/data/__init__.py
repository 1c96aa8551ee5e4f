"""Training data made from videos and engines: speaking-shot splitting, SynthTalk clips rendered by the warp
engine, and preference pairs from rendered candidates. It sits above the engines and the eval card it uses;
the shard format and the features training reads live in train/."""
