"""The volunteer worker: pull loop, executor, cache, host probe."""
