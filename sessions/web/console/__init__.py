"""The examiner's console (`examrec serve`): app.py (routes, security) and static/ (the page)."""
