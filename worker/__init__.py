"""The volunteer worker: pull loop, executor and sandbox, cache, preferences, installer."""
