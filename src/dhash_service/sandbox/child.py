"""A decoder child: reads requests from stdin, digests each, writes the reply to stdout.

Started by ``pool.DecoderPool`` as ``python -m dhash_service.sandbox.child MEMORY_BYTES``. The
address-space limit is set before the decoders are imported, so nothing the child ever maps
escapes it; the CPU limit is moved before every request to "used so far + this request's
seconds", and the kernel ends the child with SIGXCPU past it. Anything PDFium or FFmpeg print
goes to stderr: fd 1 carries only the protocol.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
from typing import IO


def _limit_memory(memory_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


def _limit_cpu(seconds: float) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = usage.ru_utime + usage.ru_stime
    soft = math.ceil(used + seconds)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, resource.RLIM_INFINITY))


def _serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    from dhash_service.digest import digest
    from dhash_service.errors import CorruptInput, InputError, ResourceLimitExceeded
    from dhash_service.extraction import Limits
    from dhash_service.extraction import pdf as _pdf  # noqa: F401  (imported before the first job)
    from dhash_service.extraction import video as _video  # noqa: F401
    from dhash_service.extraction.limits import RequestBudget
    from dhash_service.sandbox import wire

    os.nice(NICENESS)  # after the imports, so a replacement child starts at full speed
    wire.write_frame(replies, b'{"ready": true}')
    replies.flush()
    while True:
        try:
            header = json.loads(wire.read_frame(requests))
            data = wire.read_frame(requests)
        except wire.ChildGone:
            return  # the worker closed the pipe: exit quietly
        _limit_cpu(float(header["cpu_seconds"]))
        try:
            result = digest(
                data,
                filename=header["filename"],
                algorithm=header["algorithm"],
                limits=Limits(**header["limits"]),
                request=RequestBudget(float(header["request_seconds"])),
            )
            reply = wire.result_to_json(result)
        except InputError as err:
            reply = wire.failure_to_json(err)
        except MemoryError:
            reply = wire.failure_to_json(
                ResourceLimitExceeded("decoding the input needs more memory than its limit")
            )
            wire.write_frame(replies, reply)
            replies.flush()
            return  # a heap that ran out may be in any state: the worker starts a fresh child
        except Exception as exc:  # a decoder's bug on hostile bytes is still the input's fault
            reply = wire.failure_to_json(
                CorruptInput(f"the input cannot be decoded ({type(exc).__name__})")
            )
        del data
        wire.write_frame(replies, reply)
        replies.flush()


# Documents are the heavy, patient work: the kernel runs the worker's own threads (small image
# ingests, probes) first when the cores are busy.
NICENESS = 10


def main() -> None:
    _limit_memory(int(sys.argv[1]))
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints from native code go to stderr, never into the protocol
    requests = os.fdopen(0, "rb")
    _serve(requests, replies)


if __name__ == "__main__":
    main()
