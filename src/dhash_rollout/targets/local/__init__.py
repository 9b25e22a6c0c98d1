"""The local target, split by concern: :mod:`.layout` (where its files go), :mod:`.supervisor`
(supervisord process control and the slots' program files), :mod:`.readiness` (is the new
process itself ready), :mod:`.logs` (what the processes wrote), and :mod:`.target` (releases,
the blue/green switch, composed of the others)."""

from dhash_rollout.targets.local.target import SLOTS, LocalTarget

__all__ = ["SLOTS", "LocalTarget"]
