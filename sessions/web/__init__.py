"""Pages people open in a browser, and the small local servers that serve them (role "web").

Each page lives in its own folder as plain HTML, CSS and JavaScript (no build step, nothing
fetched from the network): ``review/`` is the review player of a recorded session. The web role
may import evidence, archive and recorder; only cli imports web.
"""
