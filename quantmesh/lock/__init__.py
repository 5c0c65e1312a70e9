"""Locks: the ``DistributedLock`` protocol, its key scheme (``keys``) and its backends."""
