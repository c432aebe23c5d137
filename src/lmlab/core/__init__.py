"""The ground every layer stands on: errors, the config rule library, whole-or-nothing files, the metric names,
worker processes, the allocator setting. Imports nothing of lmlab outside this package."""
