"""Web pages served by the recorder and the records office (role "web").

  console   the examiner's console: live state of an exam and its controls (`examrec serve`)

May import sessions.evidence, sessions.archive and sessions.recorder; imported by sessions.cli.
"""
