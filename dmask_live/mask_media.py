"""``dmask-live mask INPUT OUTPUT``: mask a recorded video or photo (or the built-in sample).

Every output frame is a rendering (avatar or neutral frame); there is deliberately no side-by-side
option because it would contain the face. Outputs are written to a hidden temporary file in the
output's directory and renamed only on success, so a failure never leaves a partial file.
"""

from __future__ import annotations

import argparse
import csv
import errno
import json
import logging
import math
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

PHOTO_SUFFIXES = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP",
                  ".tif": "TIFF", ".tiff": "TIFF"}
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".m4v")
METRICS_SUFFIXES = (".csv", ".json")
VIDEO_CODEC = "libx264"
AUDIO_CODEC = "aac"
_SIDE_NAMES = {2: ("od", "os"), 3: ("yaw", "pitch", "roll")}


class MaskMediaError(Exception):
    """A user-facing failure (bad input, unwritable output, missing codec...)."""


@dataclass(frozen=True)
class MaskResult:
    output: Path
    metrics: Path
    frames: int
    fps: float | None
    duration_s: float | None
    tracked_frames: int


# --------------------------------------------------------------------------- CLI
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", nargs="?", metavar="INPUT", help="video (anything FFmpeg reads) or photo")
    parser.add_argument("output", nargs="?", metavar="OUTPUT",
                        help=f"masked video ({', '.join(VIDEO_SUFFIXES)}) or photo (.png, .jpg)")
    parser.add_argument("--sample", action="store_true",
                        help="mask the built-in sample clip (a real face bundled with scikit-image); "
                             "then only OUTPUT is given")
    parser.add_argument("--keep-audio", action="store_true", help="keep the audio track (re-encoded as AAC)")
    parser.add_argument("--metrics", type=Path, metavar="FILE",
                        help="per-frame ocular metrics, .csv or .json (default: OUTPUT.metrics.csv)")
    parser.add_argument("--placement", choices=("follow", "centre"), default="follow",
                        help="avatar where the head is (follow) or centred at a fixed size")
    parser.add_argument("--size", type=_parse_size, metavar="WxH", help="output size (default: input size)")
    parser.add_argument("--model-dir", type=Path, help="directory of the ONNX landmark networks")
    parser.add_argument("--threads", type=int, default=1, help="threads for the landmark networks")


def run(args: argparse.Namespace) -> int:
    input_path, output_path = args.input, args.output
    if output_path is None and (args.sample or input_path is not None):
        input_path, output_path = None, input_path  # `mask --sample OUT` or `mask OUT`
    if output_path is None:
        print("dmask-live mask: error: give INPUT OUTPUT, or --sample OUTPUT", file=sys.stderr)
        return 2
    if args.sample and input_path is not None:
        print("dmask-live mask: error: --sample takes only OUTPUT, not INPUT", file=sys.stderr)
        return 2
    try:
        result = mask_media(
            None if input_path is None else Path(input_path), Path(output_path),
            metrics_path=args.metrics, keep_audio=args.keep_audio, placement=args.placement,
            size=args.size, model_dir=args.model_dir, threads=args.threads,
        )
    except MaskMediaError as exc:
        print(f"dmask-live mask: error: {exc}", file=sys.stderr)
        return 1
    print(f"masked {result.frames} frame(s), face tracked in {result.tracked_frames}: "
          f"{result.output} (metrics: {result.metrics})", file=sys.stderr)
    return 0


def _parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, got {text!r}") from None
    if width < 16 or height < 16:
        raise argparse.ArgumentTypeError(f"size too small: {text}")
    return width, height


# --------------------------------------------------------------------------- API
def mask_media(
    input_path: Path | None,
    output_path: Path,
    *,
    metrics_path: Path | None = None,
    keep_audio: bool = False,
    placement: str = "follow",
    size: tuple[int, int] | None = None,
    model_dir: Path | None = None,
    threads: int = 1,
    progress: bool = True,
) -> MaskResult:
    """Mask ``input_path`` (``None``: the built-in sample) into ``output_path`` plus a metrics file."""
    output_path = Path(output_path)
    metrics_path = Path(metrics_path) if metrics_path is not None else Path(f"{output_path}.metrics.csv")
    is_photo = input_path is not None and input_path.suffix.lower() in PHOTO_SUFFIXES
    _check_paths(input_path, output_path, metrics_path, is_photo)
    temps = [_temp_path(output_path), _temp_path(metrics_path)]
    try:
        opts = dict(placement=placement, size=size, model_dir=model_dir, threads=threads)
        if is_photo:
            rows, summary = _mask_photo(input_path, temps[0], output_path, **opts)
        else:
            rows, summary = _mask_video(input_path, temps[0], output_path, keep_audio=keep_audio,
                                        progress=progress, **opts)
        _write_metrics(temps[1], metrics_path, rows, summary)
        os.replace(temps[1], metrics_path)
        try:
            os.replace(temps[0], output_path)
        except OSError:
            metrics_path.unlink(missing_ok=True)
            raise
    except OSError as exc:
        _remove(temps)
        raise MaskMediaError(f"cannot write {output_path}: {_os_message(exc)}") from exc
    except MaskMediaError:
        _remove(temps)
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. an encoder error: one message, no partial file
        _remove(temps)
        log.debug("masking failed", exc_info=True)
        raise MaskMediaError(f"masking failed: {type(exc).__name__}: {exc}") from exc
    except BaseException:  # KeyboardInterrupt and friends: clean up, then let them through
        _remove(temps)
        raise
    tracked = sum(1 for row in rows if row["tracked"])
    return MaskResult(output_path, metrics_path, len(rows), summary.get("fps"), summary.get("duration_s"),
                      tracked)


# --------------------------------------------------------------------------- checks and files
def _check_paths(input_path: Path | None, output: Path, metrics: Path, is_photo: bool) -> None:
    if input_path is not None:
        if not input_path.exists():
            raise MaskMediaError(f"input not found: {input_path}")
        if input_path.is_dir():
            raise MaskMediaError(f"input is a directory, not a video or photo: {input_path}")
        if not os.access(input_path, os.R_OK):
            raise MaskMediaError(f"input is not readable: {input_path}")
    suffix = output.suffix.lower()
    if is_photo and suffix not in PHOTO_SUFFIXES:
        wanted = ", ".join(PHOTO_SUFFIXES)
        raise MaskMediaError(f"a photo input needs a photo output ({wanted}), got {output}")
    if not is_photo and suffix not in VIDEO_SUFFIXES:
        raise MaskMediaError(f"a video output must end in one of {', '.join(VIDEO_SUFFIXES)}, got {output}")
    if metrics.suffix.lower() not in METRICS_SUFFIXES:
        raise MaskMediaError(f"the metrics file must end in .csv or .json, got {metrics}")
    for path in (output, metrics):
        if input_path is not None and path.exists() and path.resolve() == input_path.resolve():
            raise MaskMediaError(f"output would overwrite the input: {path}")
        if path.is_dir():
            raise MaskMediaError(f"output is a directory: {path}")
        parent = path.parent
        if not parent.is_dir():
            raise MaskMediaError(f"cannot write {path}: directory {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise MaskMediaError(f"cannot write {path}: directory {parent} is not writable")
    if output.resolve() == metrics.resolve():
        raise MaskMediaError("the metrics file and the output must differ")


def _temp_path(final: Path) -> Path:
    return final.with_name(f".{final.stem}.partial-{uuid.uuid4().hex[:8]}{final.suffix}")


def _remove(paths: list[Path]) -> None:
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            log.warning("could not remove the partial file %s", path)


def _os_message(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    return exc.strerror or str(exc)


def _make_pipeline(size, placement, model_dir, threads):
    from dmask_live.pipeline import MaskPipeline

    try:
        return MaskPipeline(output_size=size, placement=placement, model_dir=model_dir, threads=threads)
    except Exception as exc:  # noqa: BLE001 - one clear message for the CLI
        raise MaskMediaError(f"cannot start the mask pipeline: {type(exc).__name__}: {exc}") from exc


def _rounded(value):
    return round(value, 4) if isinstance(value, float) else value


def _metrics_row(index: int, metrics) -> dict:
    row: dict = {"frame": index}
    for key, value in metrics.to_dict().items():
        value = [_rounded(v) for v in value] if isinstance(value, list) else _rounded(value)
        if isinstance(value, list):
            names = _SIDE_NAMES.get(len(value), tuple(str(i) for i in range(len(value))))
            base = key.removesuffix("_deg")
            unit = "_deg" if key.endswith("_deg") else ""
            for name, item in zip(names, value, strict=True):
                row[f"{base}_{name}{unit}"] = item
        else:
            row[key] = value
    return row


def _write_metrics(temp: Path, final: Path, rows: list[dict], summary: dict) -> None:
    if final.suffix.lower() == ".json":
        with open(temp, "w", encoding="utf-8") as handle:
            json.dump({**summary, "frames": rows}, handle, indent=1, allow_nan=False)
        return
    fields = list(rows[0]) if rows else ["frame"]
    with open(temp, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


# --------------------------------------------------------------------------- photo
def _mask_photo(src: Path, temp: Path, final: Path, *, placement, size, model_dir, threads):
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(src) as image:
            rgb = np.ascontiguousarray(np.asarray(ImageOps.exif_transpose(image).convert("RGB")))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise MaskMediaError(f"cannot read the photo {src}: {exc}") from exc
    pipeline = _make_pipeline(size, placement, model_dir, threads)
    try:
        masked = pipeline.process(rgb, 0.0)
    finally:
        pipeline.close()
    Image.fromarray(masked.image).save(temp, format=PHOTO_SUFFIXES[final.suffix.lower()])
    return [_metrics_row(0, masked.metrics)], {"kind": "photo"}


# --------------------------------------------------------------------------- video
@dataclass
class _Source:
    items: Iterator[tuple]  # ("video", rgb, pts, seconds) or ("audio", AudioFrame, None, None)
    fps: Fraction
    time_base: Fraction
    size: tuple[int, int]
    total: int | None
    audio: object | None = None  # input audio stream to re-encode
    container: object | None = None


def _open_source(src: Path | None, keep_audio: bool) -> _Source:
    if src is None:
        from dmask_live import sample

        fps = Fraction(sample.SAMPLE_FPS)
        frames = (("video", image, i, i / float(fps)) for i, image in enumerate(sample.sample_frames()))
        return _Source(frames, fps, 1 / fps, (512, 512), sample.sample_frame_count())
    import av

    try:
        container = av.open(str(src))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise MaskMediaError(f"cannot read {src}: not a readable video or photo ({exc})") from exc
    try:
        if not container.streams.video:
            raise MaskMediaError(f"{src} has no video stream")
        video = container.streams.video[0]
        video.thread_type = "AUTO"
        fps = video.average_rate or video.guessed_rate or video.base_rate
        if not fps:
            raise MaskMediaError(f"{src}: cannot tell the frame rate")
        width, height = video.codec_context.width, video.codec_context.height
        if not width or not height:
            raise MaskMediaError(f"{src}: the video stream has no frame size (missing decoder?)")
        audio = container.streams.audio[0] if keep_audio and container.streams.audio else None
        items = _demux(container, video, audio, src)
        return _Source(items, Fraction(fps), video.time_base, (width, height), video.frames or None,
                       audio, container)
    except BaseException:
        container.close()
        raise


def _demux(container, video, audio, src: Path) -> Iterator[tuple]:
    import av

    streams = [video] + ([audio] if audio is not None else [])
    fallback_fps = float(video.average_rate or video.guessed_rate or 25)
    index = 0
    try:
        for packet in container.demux(*streams):
            for frame in packet.decode():
                if packet.stream.type == "audio":
                    yield "audio", frame, None, None
                    continue
                pts = frame.pts if frame.pts is not None else index
                seconds = float(frame.time) if frame.time is not None else index / fallback_fps
                yield "video", frame.to_ndarray(format="rgb24"), pts, seconds
                index += 1
    except av.FFmpegError as exc:
        raise MaskMediaError(f"cannot read {src}: the video is damaged or truncated ({exc})") from exc


def _even(value: int) -> int:
    return max(2, int(value) // 2 * 2)


def _video_encoder(container, fps: Fraction, size: tuple[int, int], time_base: Fraction):
    import av

    try:
        av.codec.Codec(VIDEO_CODEC, "w")
    except Exception as exc:  # noqa: BLE001 - UnknownCodecError and friends
        raise MaskMediaError(
            f"this PyAV/FFmpeg build has no {VIDEO_CODEC} (H.264) encoder; install the PyPI 'av' wheel, "
            "which includes it"
        ) from exc
    stream = container.add_stream(VIDEO_CODEC, rate=fps)
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.time_base = time_base
    stream.codec_context.time_base = time_base
    stream.options = {"crf": "20", "preset": "veryfast"}
    return stream


def _audio_encoder(container, audio_in):
    import av

    try:
        av.codec.Codec(AUDIO_CODEC, "w")
    except Exception as exc:  # noqa: BLE001
        raise MaskMediaError(f"this PyAV/FFmpeg build has no {AUDIO_CODEC} encoder for --keep-audio") from exc
    stream = container.add_stream(AUDIO_CODEC, rate=audio_in.rate or 48000)
    if audio_in.layout is not None:
        stream.layout = audio_in.layout.name
    return stream


def _mux(container, packets) -> None:
    """Write encoded packets (one place, so a full disk surfaces as one OSError)."""
    import av

    try:
        container.mux(packets)
    except av.FFmpegError as exc:
        if getattr(exc, "errno", None) == errno.ENOSPC:
            raise OSError(errno.ENOSPC, "no space left on the device") from exc
        raise OSError(getattr(exc, "errno", None) or errno.EIO, str(exc)) from exc


def _close_quietly(container) -> None:
    """Close after a failure; the first error is the one worth reporting."""
    try:
        container.close()
    except Exception:  # noqa: BLE001
        log.debug("closing the partial output failed too", exc_info=True)


def _mask_video(src, temp: Path, final: Path, *, keep_audio, progress, placement, size, model_dir, threads):
    import av
    from tqdm import tqdm

    source = _open_source(src, keep_audio)
    out_size = (_even(size[0]), _even(size[1])) if size else (_even(source.size[0]), _even(source.size[1]))
    rows: list[dict] = []
    first_pts = last_pts = None
    pipeline = None
    try:
        try:
            output = av.open(str(temp), "w")
        except (av.FFmpegError, OSError) as exc:
            raise OSError(getattr(exc, "errno", None) or errno.EIO, str(exc)) from exc
        try:
            video_out = _video_encoder(output, source.fps, out_size, source.time_base)
            audio_out = _audio_encoder(output, source.audio) if source.audio is not None else None
            pipeline = _make_pipeline(out_size, placement, model_dir, threads)
            bar = tqdm(total=source.total, unit="frame", file=sys.stderr, disable=not progress,
                       desc=final.name, leave=False)
            with bar:
                for kind, payload, pts, seconds in source.items:
                    if kind == "audio":
                        _mux(output, audio_out.encode(payload))
                        continue
                    masked = pipeline.process(payload, seconds)
                    frame = av.VideoFrame.from_ndarray(masked.image, format="rgb24")
                    frame.pts, frame.time_base = pts, source.time_base
                    _mux(output, video_out.encode(frame))
                    rows.append(_metrics_row(len(rows), masked.metrics))
                    first_pts = pts if first_pts is None else first_pts
                    last_pts = pts
                    bar.update(1)
            if not rows:
                raise MaskMediaError(f"{src or 'the sample'} has no decodable video frames")
            _mux(output, video_out.encode(None))
            if audio_out is not None:
                _mux(output, audio_out.encode(None))
        except BaseException:
            _close_quietly(output)
            raise
        output.close()
    finally:
        if pipeline is not None:
            pipeline.close()
        if source.container is not None:
            source.container.close()
    fps = float(source.fps)
    duration = float((last_pts - first_pts) * source.time_base) + 1.0 / fps
    summary = {"kind": "video", "fps": fps, "frame_count": len(rows), "duration_s": duration}
    if not math.isfinite(duration):
        summary.pop("duration_s")
    return rows, summary
