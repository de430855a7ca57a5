"""Exit codes every examrec command uses, so scripts can rely on them."""
OK = 0
FAILED = 1          # the command ran and found a problem (verify mismatch, failed check, device fault)
USAGE = 2           # a user mistake: bad arguments, broken profile, missing session
REFUSED = 3         # refused by the state of things: illegal transition, failed mandatory check, locked
DISK_FULL = 4       # recording stopped because the disk filled up; everything written stays playable
INTERRUPTED = 5     # recording ended by a device or process failure; the session is marked interrupted
UNREACHABLE = 6     # a recorder, gpsd or archive could not be reached
