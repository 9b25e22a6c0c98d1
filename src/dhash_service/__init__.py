"""dhash service: perceptual image hashing, matching and review behind an HTTP API."""

__version__ = "0.1.0"
