"""The demos: ``make demo`` (``python -m dhash_rollout.demo``), a guarded rollout that catches a
bad release, and ``make demo-hash`` (``python -m dhash_rollout.demo.hashing``), hashing and
matching a generated image set.

One module per job: ``builds`` (releases A and B from this checkout), ``site`` (the working
directory and its ``dhash`` commands), ``load`` (the traffic), ``reviewer`` (decisions through
the API), ``receiver`` (the loopback Slack-format webhook), ``evidence`` (what the toolkit
recorded), ``outcome`` (the pure judge of the exit code), ``story`` (Rich or plain lines) and
``rollout`` (the steps, in order).
"""
