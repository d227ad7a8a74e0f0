"""The warehouse node: content-addressed object storage near the workers."""
