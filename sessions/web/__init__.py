"""Pages people open in a browser, and the small local servers that serve them (role "web").

Each page lives in its own folder as plain HTML, CSS and JavaScript (no build step, nothing
fetched from the network):

  review/    the review player of a recorded session (`examrec view`, `archive view`, copy kits)
  console/   the examiner's console: live state of an exam and its controls (`examrec serve`)

May import sessions.evidence, sessions.archive and sessions.recorder; only sessions.cli imports web.
"""
