"""Instance coordination: who trades which symbol when several instances run.

- ``allocation`` (pure): which symbols an instance wants, given the live members;
- ``membership``: the records every fleet store keeps (members, ownership records) and
  the ``FleetStore`` protocol; ``fleet`` keeps them in Redis, ``fleet_etcd`` in etcd;
- ``servers``: the lock server a fleet shares, one factory per ``distributed_lock.type``;
- ``coordinator``: one trader per symbol this instance holds the ownership lease of;
- ``records``: the ownership records it keeps beside the leases; ``takeover`` (pure):
  the wait before trading a symbol taken over, and the refusal of another database's;
- ``fallback``: the ownership leases of an instance whose lock falls back to a local one.
"""
