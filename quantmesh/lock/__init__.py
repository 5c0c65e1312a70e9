"""Locks: the ``DistributedLock`` protocol and its backends."""
