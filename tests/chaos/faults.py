"""The faults done to a fleet's instances whatever their lock server - kill -9 an owner,
freeze one past its lease, cut one off its lock server - each followed by the take-over of
its symbols, and noted for the verdict: how long each take-over took, and the spans in
which an instance held no lease (none of its requests may execute then)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.servers.proxy import TcpProxy

from .harness import CHECK_INTERVAL, LEASE_TTL, SYMBOLS, Node, owner_of, wait_owner
from .invariants import Leaseless

# A take-over: the lease lapses (TTL), the next try (one check interval), then the new
# owner loads the grid and reconciles with the exchange (a few REST calls).
FAILOVER_BOUND = LEASE_TTL + CHECK_INTERVAL
STARTUP_ALLOWANCE = 3.0
# A former owner back from a freeze or a partition finds its leases gone at once: its
# status stops claiming their symbols within this.
RELEASE_ALLOWANCE = 2.0
# A leaseless span starts this long after the fault plus the lease TTL: the signal or the
# cut takes effect a moment after the harness notes the time, and the simulator records
# an action a moment after its expiry check.
LATE_SLACK = 0.25


@dataclass
class Faults:
    """The fleet, the faults done to it, and what they showed."""

    nodes: list[Node]
    bound: float = FAILOVER_BOUND + STARTUP_ALLOWANCE  # seconds from a fault to a take-over
    failovers: list[tuple[str, str, float]] = field(default_factory=list)
    # spans in which an instance held no lease: none of its requests may execute then
    leaseless: list[Leaseless] = field(default_factory=list)
    # slow take-overs and releases, judged after the safety invariants
    findings: list[str] = field(default_factory=list)
    frozen: Node | None = None
    thawed: float = 0.0  # wall time (the simulator's clock) of the SIGCONT

    def took_over(self, scenario: str, lost: set[str], old: Node, since: float) -> None:
        """Each symbol ``old`` traded is traded by another node; one taken over later than
        the bound is a finding (judged after the safety invariants, which it must not hide)."""
        for symbol in sorted(lost):
            wait_owner(self.nodes, symbol, self.bound + 10, other_than=old)
            elapsed = time.monotonic() - since
            self.failovers.append((scenario, symbol, elapsed))
            if elapsed > self.bound:
                self.findings.append(
                    f"{scenario}: {symbol} taken over after {elapsed:.1f} s "
                    f"(bound {self.bound:.1f} s)"
                )

    def quiet(self, node: Node, scenario: str) -> None:
        """Wait until ``node``, back after losing its leases, says it trades nothing; saying
        so for longer than ``RELEASE_ALLOWANCE`` is a finding (it places nothing: that is
        ``late_actions``; but its status claims symbols another instance trades)."""
        since = time.monotonic()
        deadline = since + RELEASE_ALLOWANCE + 10
        while (claimed := node.claims()) != set():
            assert time.monotonic() < deadline, f"{scenario}: {node.name} still says {claimed}"
            time.sleep(0.1)
        elapsed = time.monotonic() - since
        if elapsed > RELEASE_ALLOWANCE:
            self.findings.append(
                f"{scenario}: {node.name} said it traded symbols it no longer owned for "
                f"{elapsed:.1f} s after it was back"
            )

    def start(self) -> None:
        """All on the same symbols: each symbol traded by exactly one of them."""
        for node in self.nodes:
            node.start()
        for symbol in SYMBOLS:
            wait_owner(self.nodes, symbol, 60)
        time.sleep(2)
        for symbol in SYMBOLS:
            assert owner_of(self.nodes, symbol) is not None

    def kill_owner(self) -> None:
        """kill -9 the owner of ETH; it comes back as systemd restarts it, and waits (its
        instance id is free again once its heartbeat has lapsed)."""
        victim = owner_of(self.nodes, "ETH/USDT")
        assert victim is not None
        lost = victim.trading()
        killed = time.monotonic()
        victim.kill()
        self.took_over("kill -9", lost, victim, killed)
        victim.start()

    def freeze_owner(self) -> None:
        """SIGSTOP the owner of BTC past its lease, then SIGCONT: it trades no more."""
        frozen, _ = wait_owner(self.nodes, "BTC/USDT", self.bound)
        lost = frozen.trading()
        lease_end = time.time() + LEASE_TTL + LATE_SLACK
        frozen.pause()
        paused = time.monotonic()
        self.took_over("SIGSTOP", lost, frozen, paused)
        time.sleep(max(0.0, LEASE_TTL + 1 - (time.monotonic() - paused)))
        self.frozen, self.thawed = frozen, time.time()
        frozen.resume()
        self.quiet(frozen, "SIGSTOP")
        time.sleep(2)
        assert not frozen.trading(), "a thawed former owner trades again"
        self.leaseless.append(Leaseless(frozen.key[0], lease_end, time.time(), "SIGSTOP"))

    def cut_off_owner(self, scenario: str, link: Callable[[Node], TcpProxy]) -> None:
        """Cut the owner of ETH off at ``link`` (its proxy to a server): it stops within its
        lease, another takes over; healed, it trades no more."""
        cut_off = owner_of(self.nodes, "ETH/USDT")
        assert cut_off is not None
        lost = cut_off.trading()
        lease_end = time.time() + LEASE_TTL + LATE_SLACK
        cut = time.monotonic()
        link(cut_off).blackhole()
        self.took_over(scenario, lost, cut_off, cut)
        link(cut_off).heal()
        self.quiet(cut_off, scenario)
        time.sleep(2)
        assert not cut_off.trading(), f"{scenario}: an owner back from it trades again"
        self.leaseless.append(Leaseless(cut_off.key[0], lease_end, time.time(), scenario))

    def worst(self) -> float:
        """The slowest take-over after a fault (a lock server's restart is a recovery)."""
        return max(sec for name, _, sec in self.failovers if "restart" not in name)

    def report(self, note: str = "") -> str:
        """The take-overs and findings, for the test's summary; ``note`` on the worst."""
        return "\n".join(
            [
                "failovers: "
                + ", ".join(f"{name} {symbol} {sec:.1f} s" for name, symbol, sec in self.failovers),
                f"worst failover: {self.worst():.1f} s (bound {self.bound:.1f} s{note})",
                "slow take-overs and releases: " + ("; ".join(self.findings) or "none"),
            ]
        )
