"""The records office: the central storage of sessions, its catalog, journals and access control.

Sessions are uploaded from recorders (``examrec upload``) into an archive that keeps every object
unchanged until the exam date plus the retention period (Object Lock COMPLIANCE on S3, enforced in
code on a local folder), honours complaints (legal hold), issues verified copies and journals all
of it in append-only, hash-chained journals (``examrec archive ...``, ``examrec device ...``).

Modules:
  backend    the storage protocol and URL dispatch (file:///path, s3://bucket)
  folder     the local-folder backend        s3        the S3 backend (boto3, Object Lock)
  access     people, roles, scrypt passwords  config    archive URL, connection file, settings
  journals   journals and corrections         printing  the official forms (Jinja2 + forms/), CSV
  catalog    the SQLite index (rebuildable)   textnorm  folding and passport Latin spellings for search
  retention  the pure keep/delete policy      workdays  the centre's calendar (holidays, worked days)
  localtime  the centre's time zone
  upload     upload, resume, watch, overdue   copy      copies with a verification kit
  office     the records-office operations (find, hold, release, sweep, check)
"""
