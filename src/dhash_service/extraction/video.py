"""Video: one keyframe per interval, through PyAV (FFmpeg's libraries, in process).

Only keyframes are decoded (``skip_frame="NONKEY"``), so cost follows the number of keyframes,
not the frame rate. We sample one keyframe every ``video_frame_interval_seconds``; when the
container states a duration that would need more than ``max_video_frames`` samples, the interval
is stretched so the whole video is still covered. A duration over ``max_video_seconds`` (stated,
or met while decoding) and a stream without a usable duration that keeps yielding frames past
``max_video_frames`` are refused.

The demuxer is chosen from the sniffed container, so FFmpeg never probes the input and never
opens anything but the bytes we hand it. Licence consequence: see docs/hashing.md.
"""

from __future__ import annotations

import io
from fractions import Fraction

import av

from dhash_service.errors import CorruptInput, InputError, LimitExceeded, UnsupportedFormat
from dhash_service.extraction.context import Context
from dhash_service.extraction.model import (
    INPUT_VIDEO,
    KIND_VIDEO_FRAME,
    ExtractedImage,
    Extraction,
    ItemFailure,
)

# Frames whose timestamps sit this close to a sampling mark count as on it.
_EPSILON_SECONDS = 1e-3


def extract_video(data: bytes, demuxer: str, ctx: Context) -> Extraction:
    try:
        container = av.open(io.BytesIO(data), mode="r", format=demuxer)
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:  # the latter: garbled metadata
        raise CorruptInput(f"video cannot be read: {exc}") from None
    with container:
        if not container.streams.video:
            raise UnsupportedFormat("the file has no video stream")
        return _sample_keyframes(container, ctx)


def _sample_keyframes(container: av.container.InputContainer, ctx: Context) -> Extraction:
    limits = ctx.limits
    stream = container.streams.video[0]
    duration = _duration(container, stream)
    if duration is not None and duration > limits.max_video_seconds:
        raise _too_long(duration, limits.max_video_seconds)
    interval = limits.video_frame_interval_seconds
    if duration is not None:
        interval = max(interval, duration / limits.max_video_frames)
    rate = float(stream.average_rate) if stream.average_rate else None
    if stream.codec_context is None:  # FFmpeg knows no decoder for this stream's codec
        raise UnsupportedFormat("the video stream's codec cannot be decoded here")
    stream.codec_context.skip_frame = "NONKEY"

    result = Extraction(INPUT_VIDEO)
    next_mark = 0.0
    budget = ctx.new_budget()
    frames = container.decode(stream)
    while True:
        locator = f"frame>{len(result.items)}"
        try:
            with budget.running():
                frame = next(frames, None)
                if frame is None:
                    break
                seconds = frame.time if frame.time is not None else next_mark
                index = round(seconds * rate) if rate else len(result.items)
                locator = f"frame={index}"
                if seconds > limits.max_video_seconds:
                    raise _too_long(seconds, limits.max_video_seconds)
                if seconds + _EPSILON_SECONDS < next_mark:
                    continue  # a keyframe between marks: decoded but not wanted
                if len(result.items) >= limits.max_video_frames:
                    raise LimitExceeded(
                        f"video yields more than {limits.max_video_frames} frames at one every "
                        f"{interval:g} s and states no duration to spread them over",
                        detail={"limit": limits.max_video_frames},
                    )
                ctx.check_pixels(frame.width, frame.height, "video frame")
                ctx.count_item()
                ctx.count_decoded(frame.width, frame.height)
                gray = frame.to_image().convert("L")  # type: ignore[no-untyped-call]
            budget.check()
        except LimitExceeded:
            raise
        except InputError as err:  # the time budget: what we have so far stands
            result.failures.append(ItemFailure(locator, err))
            break
        except av.error.FFmpegError as exc:
            result.failures.append(
                ItemFailure(locator, CorruptInput(f"video decoding failed: {exc}"))
            )
            break
        result.items.append(ExtractedImage(gray, locator, KIND_VIDEO_FRAME, budget))
        budget = ctx.new_budget()
        next_mark = seconds + interval
    return result


def _duration(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> float | None:
    if container.duration:
        return float(container.duration) / av.time_base
    if stream.duration and stream.time_base:
        return float(stream.duration * Fraction(stream.time_base))
    return None


def _too_long(seconds: float, limit: float) -> LimitExceeded:
    return LimitExceeded(
        f"video is longer than {limit:g} s (at least {seconds:.1f} s)",
        detail={"seconds": round(seconds, 3), "limit": limit},
    )
