"""Sessions: the top layer, split by role. Each folder says what lives there and what may be
imported from it.

  cli/       the `examrec` command line: one module per command, output helpers, progress
  recorder/  a session being recorded: controller, stream processes, exam control, sensor hub,
             pre-exam checks, control socket
  evidence/  the session folder as evidence: layout, manifest, events, chains, signing, verify,
             repair, the writer's lock
  archive/   the records office: storage, catalog, journals, retention, copies, access
  exitcodes  the outcome codes every role reports (the README's table)

Lower layers (core/, capture/, sensors/, muxer/) never import from here.
"""
