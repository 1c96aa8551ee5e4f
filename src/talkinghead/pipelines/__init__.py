"""Pipeline pieces several systems share (`reference_net`: the loaded parts of a ReferenceNet system). Each
system's own pipeline and engine live in systems/<name>/; the registry (`talkinghead.systems`) says which
engines exist and what each needs."""
