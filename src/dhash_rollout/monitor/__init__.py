"""The post-deploy monitor: quality gates computed from the new release's real metrics.

Pure cores (``gates_config``, ``cadence``, ``promql``, ``gates``) hold the rules; ``sources``
reads the service (scrape) or a Prometheus server; ``runner.GateMonitor`` polls on the cadence,
writes the decision ledger, the log and the HTML report, and returns a verdict through the seam
in :mod:`dhash_rollout.runs.monitoring`. Rolling back is the controller's job, never this one's.
"""
