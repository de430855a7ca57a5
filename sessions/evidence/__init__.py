"""The session folder as evidence: its layout (FORMAT.md), the manifest, the event log, hash
chains, signing, verify, repair and the writer's lock.

May import core/ and muxer/ (repair trims fragments); imported by the recorder, the archive and
the command line. Nothing here records or uploads.
"""
