"""The streaming dataset of prepared videos: litdata's StreamingDataset yielding clips."""

from __future__ import annotations

from typing import Any

from litdata import StreamingDataset

from everest.data.clips import ClipMaker


class VideoClipDataset(StreamingDataset):
    """A prepared dataset (local folder or s3:// URL) whose items are samples made by `clips`:
    {"video": uint8 clip, "label": ..., "index": video_id}. Sharding over ranks and workers,
    shuffling and the resumable position are litdata's; `clips` sees the epoch, so augmentations
    change every epoch yet stay reproducible. Random access (`dataset[i]`) works too."""

    def __init__(self, input_dir: str, clips: ClipMaker, **streaming_options: Any):
        # Whole-chunk item shuffle and per-item decoding suit records of hundreds of kilobytes.
        streaming_options.setdefault("item_shuffle_window", 0)
        streaming_options.setdefault("batch_decode", 0)
        super().__init__(input_dir, **streaming_options)
        self.clips = clips

    def __getitem__(self, index: Any) -> Any:
        record = super().__getitem__(index)
        if isinstance(record, list):  # a slice
            return [self.clips(r, self.current_epoch) for r in record]
        return self.clips(record, self.current_epoch)
