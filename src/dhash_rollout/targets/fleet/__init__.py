"""The fleet target: service hosts reached over SSH through the deployment engine, behind an
HAProxy whose runtime API drains, readies and weights them (docs/architecture.md, "Fleet")."""
