"""The bottom layer: what capture/, sensors/, muxer/ and sessions/ all share.

Lives here: the session clock (``clock``: one monotonic timeline, wall time derived from one
anchor), the durable IO layer (``durable``: every byte of a session is written, flushed and
fsynced through it, so the crash harness sees it), and the hardware profile with its specs
(``profile``: stream, encoder, overlay, sensor and retention specs, validated on load).

Imports nothing from capture/, sensors/, muxer/ or sessions/ (tests/test_layers.py checks it);
every other package may import from here.
"""
