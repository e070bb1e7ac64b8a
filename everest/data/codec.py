"""The stored video format, and reading frames from stored videos and from source files.

A stored video is an H.264 Annex-B byte string plus a packet table. The encoder runs with a
fixed frame structure: a keyframe every `gop` frames (SPS/PPS repeated on each) and runs of
`bframes` non-reference B-frames between reference frames (I K B B B B B B B P B ... at the
default 7). Nothing references a B-frame, so a reader that wants a few frames starts at the
last keyframe before the first one, feeds the decoder every reference frame up to the last one
and only the B-frames it wants; every other B-frame is never decoded. The packet table (byte
offset, display index and kind of each packet in decode order) makes that seek exact without
a demuxer. See docs/data.md for the measurements behind the defaults.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

# Packet kinds in the packet table.
DISPOSABLE, REFERENCE, KEYFRAME = 0, 1, 2

_START_CODE = re.compile(b"\x00\x00\x01")
_SLICE_NAL_TYPES = (1, 5)  # coded slice of a non-IDR / IDR picture
# Reusing one scaler context is ~6x faster than to_ndarray(format=...). Scalers run on one thread:
# a worker is the unit of parallelism, and threads would not survive the fork into DataLoader workers.
_RGB = VideoReformatter()


class VideoReadError(Exception):
    """A video that cannot be used; `reason` says why in a few words."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class StorageSettings:
    """How videos are re-encoded for the shards (recorded in every prepared dataset)."""

    short_side: int = 256  # videos with a larger short side are downscaled to it; never upscaled
    gop: int = 64  # frames between keyframes
    bframes: int = 7  # non-reference B-frames between reference frames
    crf: int = 23  # x264 constant rate factor (quality; lower is better and larger)
    preset: str = "medium"
    tune: str | None = "fastdecode"  # CAVLC, no deblocking: cheaper to decode
    # Lossless RGB (libx264rgb at qp 0): decoded frames equal the source's exactly, whatever the
    # encoder's run-to-run choices; for small synthetic videos whose pixels must be bit-stable.
    lossless: bool = False

    def __post_init__(self) -> None:
        if self.short_side < 2:
            raise ValueError(f"short_side={self.short_side} must be >= 2")
        if self.bframes < 0 or self.gop < 1 or self.gop % (self.bframes + 1):
            raise ValueError(f"gop={self.gop} must be a positive multiple of bframes + 1 = {self.bframes + 1}")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class EncodedVideo:
    """One stored video: the fields of a shard record (see `as_record`)."""

    data: bytes
    packet_offsets: np.ndarray  # int64 [P + 1]: packet j is data[offsets[j]:offsets[j + 1]]
    packet_frames: np.ndarray  # int32 [P]: display index of packet j's frame
    packet_kinds: np.ndarray  # uint8 [P]: DISPOSABLE / REFERENCE / KEYFRAME
    width: int
    height: int
    fps: float
    source_size: tuple[int, int] = (0, 0)  # (width, height) before resizing

    @property
    def num_frames(self) -> int:
        return len(self.packet_frames)

    @property
    def stored_bytes(self) -> int:
        return len(self.data) + sum(a.nbytes for a in (self.packet_offsets, self.packet_frames, self.packet_kinds))

    def as_record(self) -> dict:
        return {
            "video": self.data,
            "packet_offsets": self.packet_offsets,
            "packet_frames": self.packet_frames,
            "packet_kinds": self.packet_kinds,
            "num_frames": self.num_frames,
            "height": self.height,
            "width": self.width,
            "fps": self.fps,
        }


def scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side at most `short_side`, both even (yuv420p)."""
    scale = min(1.0, short_side / min(width, height))
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


def _packet_kind(packet: bytes, keyframe: bool) -> int:
    if keyframe:
        return KEYFRAME
    for match in _START_CODE.finditer(packet):
        header = packet[match.end()]
        if header & 0x1F in _SLICE_NAL_TYPES:
            return REFERENCE if (header >> 5) & 3 else DISPOSABLE
    return REFERENCE


class H264Writer:
    """Encodes frames (any size/format) into an `EncodedVideo` with the fixed frame structure."""

    def __init__(self, width: int, height: int, fps: float, settings: StorageSettings, threads: int = 1):
        rate = Fraction(fps).limit_denominator(1001)
        s = settings
        self._format = "rgb24" if s.lossless else "yuv420p"
        self._codec = av.CodecContext.create("libx264rgb" if s.lossless else "libx264", "w")
        self._codec.width, self._codec.height, self._codec.pix_fmt = width, height, self._format
        self._codec.time_base, self._codec.framerate = 1 / rate, rate
        self._codec.thread_count = threads
        params = (
            f"keyint={s.gop}:min-keyint={s.gop}:scenecut=0:bframes={s.bframes}:b-adapt=0"
            ":b-pyramid=none:open-gop=0:repeat-headers=1"
        )
        quality = {"qp": "0"} if s.lossless else {"crf": str(s.crf)}
        self._codec.options = {
            **quality,
            "preset": s.preset,
            "x264-params": params,
            **({"tune": s.tune} if s.tune else {}),
        }
        self._scaler = VideoReformatter()
        self._packets: list[av.Packet] = []
        self._count = 0
        self.width, self.height, self.fps = width, height, float(rate)

    def add(self, frame: av.VideoFrame) -> None:
        if self._format == "rgb24":
            picture = self._scaler.reformat(frame, width=self.width, height=self.height, format="rgb24", threads=1)
        else:
            picture = self._scaler.reformat(
                frame,
                width=self.width,
                height=self.height,
                format="yuv420p",
                threads=1,
                src_color_range=frame.color_range or None,
                dst_color_range="MPEG",
            )
        picture.pts, picture.time_base = self._count, self._codec.time_base
        picture.pict_type = av.video.frame.PictureType.NONE  # source frame types must not force ours
        self._packets += self._codec.encode(picture)
        self._count += 1

    @property
    def frames_written(self) -> int:
        return self._count

    def finish(self) -> EncodedVideo:
        self._packets += self._codec.encode(None)
        chunks = [bytes(p) for p in self._packets]
        return EncodedVideo(
            data=b"".join(chunks),
            packet_offsets=np.cumsum([0] + [len(c) for c in chunks], dtype=np.int64),
            packet_frames=np.array([p.pts for p in self._packets], dtype=np.int32),
            packet_kinds=np.array(
                [_packet_kind(c, p.is_keyframe) for c, p in zip(chunks, self._packets)], dtype=np.uint8
            ),
            width=self.width,
            height=self.height,
            fps=self.fps,
        )


def _open_video(path: Path) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise VideoReadError(f"cannot open: {err}") from None
    if not container.streams.video:
        container.close()
        raise VideoReadError("no video stream")
    return container, container.streams.video[0]


def _stream_fps(stream: av.video.stream.VideoStream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else None


def transcode(path: str | Path, settings: StorageSettings, threads: int = 1) -> EncodedVideo:
    """Decode every frame of `path` and re-encode it for storage; raises VideoReadError."""
    container, stream = _open_video(Path(path))
    with container:
        stream.thread_type = "AUTO"
        fps = _stream_fps(stream) or 30.0
        writer, source_size = None, (0, 0)
        try:
            for frame in container.decode(stream):
                if writer is None:
                    source_size = (frame.width, frame.height)
                    width, height = scaled_size(frame.width, frame.height, settings.short_side)
                    writer = H264Writer(width, height, fps, settings, threads)
                writer.add(frame)
        except av.error.FFmpegError as err:
            done = writer.frames_written if writer is not None else 0
            raise VideoReadError(f"decode error after {done} frames: {err}") from None
    if writer is None:
        raise VideoReadError("no decodable frames")
    video = writer.finish()
    video.source_size = source_size
    return video


def _rgb(frame: av.VideoFrame) -> np.ndarray:
    return _RGB.reformat(frame, format="rgb24", threads=1).to_ndarray()


def decode_frames(record: Mapping, indices: Sequence[int], threads: int = 1) -> np.ndarray:
    """RGB uint8 [len(indices), H, W, 3] for display `indices` (any order, repeats allowed) of a
    stored video (`EncodedVideo.as_record()` fields), decoding only what those frames need."""
    frames, kinds = np.asarray(record["packet_frames"]), np.asarray(record["packet_kinds"])
    offsets, data = np.asarray(record["packet_offsets"]), memoryview(record["video"])
    wanted = np.unique(np.asarray(indices, dtype=np.int64))
    if len(wanted) == 0:
        raise ValueError("no frame indices given")
    if wanted[0] < 0 or wanted[-1] >= len(frames):
        raise ValueError(f"frame indices {wanted[0]}..{wanted[-1]} outside the video's {len(frames)} frames")
    keyframes = np.flatnonzero(kinds == KEYFRAME)
    first = keyframes[np.searchsorted(frames[keyframes], wanted[0], side="right") - 1]
    position = np.empty(len(frames), dtype=np.int64)
    position[frames] = np.arange(len(frames))
    last = position[wanted].max()
    span = np.arange(first, last + 1)
    feed = span[(kinds[span] != DISPOSABLE) | np.isin(frames[span], wanted)]

    codec = av.CodecContext.create("h264", "r")
    codec.thread_count = threads
    wanted_set = set(wanted.tolist())
    decoded: dict[int, np.ndarray] = {}

    def keep(output: Iterable[av.VideoFrame]) -> None:
        for frame in output:
            if frame.pts in wanted_set:
                decoded[frame.pts] = _rgb(frame)

    for j in feed.tolist():
        packet = av.Packet(data[offsets[j] : offsets[j + 1]])
        packet.pts = int(frames[j])
        keep(codec.decode(packet))
    keep(codec.decode(None))
    missing = wanted_set - decoded.keys()
    if missing:
        raise ValueError(f"the stored video did not yield frames {sorted(missing)[:5]}")
    return np.stack([decoded[i] for i in np.asarray(indices).tolist()])


def read_source_frames(path: str | Path, indices: Sequence[int], threads: int = 1) -> np.ndarray:
    """RGB uint8 [len(indices), H, W, 3] straight from a constant-frame-rate source file: seek to
    the keyframe before the first index and decode forward (what decord/VideoMAE loaders do)."""
    wanted = sorted(set(int(i) for i in indices))
    container, stream = _open_video(Path(path))
    with container:
        stream.thread_count = threads
        rate, base, start = stream.average_rate or stream.guessed_rate, stream.time_base, stream.start_time or 0
        container.seek(start + int(wanted[0] / rate / base), stream=stream, backward=True)
        decoded: dict[int, np.ndarray] = {}
        for frame in container.decode(stream):
            index = int(round((frame.pts - start) * base * rate))
            if index in wanted:
                decoded[index] = _rgb(frame)
            if index >= wanted[-1]:
                break
    missing = set(wanted) - decoded.keys()
    if missing:
        raise VideoReadError(f"{path}: frames {sorted(missing)[:5]} not found")
    return np.stack([decoded[int(i)] for i in indices])


def probe_source(path: str | Path) -> tuple[int, float]:
    """(frame count, frames per second) of a source file's video stream, without decoding: the
    count the container records, else the number of video packets. Raises VideoReadError."""
    path = Path(path)
    if not path.is_file():
        raise VideoReadError("missing file" if not path.exists() else "not a file")
    if path.stat().st_size == 0:
        raise VideoReadError("empty file")
    container, stream = _open_video(path)
    with container:
        fps = _stream_fps(stream) or 30.0
        count = stream.frames
        try:
            if not count:
                count = sum(1 for packet in container.demux(stream) if packet.size)
        except av.error.FFmpegError as err:
            raise VideoReadError(f"cannot read packets: {err}") from None
    if not count:
        raise VideoReadError("no video frames")
    return int(count), fps


def iter_source_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Every frame of a source video as RGB uint8 [H, W, 3]."""
    container, stream = _open_video(Path(path))
    with container:
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield _rgb(frame)
