"""Overlay, H.264 encoding, crash-safe fragmented MP4 segments and their repair."""
