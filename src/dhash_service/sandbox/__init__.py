"""Risky decoders in child processes: PDFs, videos and archives cost at most their limits.

PDFium and FFmpeg cannot be interrupted, and their memory cannot be bounded from the header (a
654-byte PDF whose Form XObject draws itself grew a worker to 19 GB). So a worker hands such
inputs to a pool of child processes (``pool.DecoderPool``), each under a hard address-space
limit (``RLIMIT_AS``) and a CPU limit (``RLIMIT_CPU``) and watched by a wall clock; a child that
breaches one is killed and replaced, and its death is a typed 4xx for that input.
"""

from dhash_service.sandbox.pool import DecoderPool, isolated_kind

__all__ = ["DecoderPool", "isolated_kind"]
