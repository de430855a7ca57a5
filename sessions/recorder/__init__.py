"""The recorder: a session while it is being recorded.

  controller      the session controller (checks, start, pause/resume, stop; owns the manifest
                  and event log while recording)
  stream/         one process per stream: source threads -> stages -> sinks
  messages        what the controller and the stream processes send each other (frozen dataclasses)
  exam            exam control: the pause rule (a pause's banner lead), resume, stop
  sensor_hub      GPS and pedals glue: telemetry, route, overlay values, sensor events
  checks          the pre-exam checks      control  the control socket (pause/resume/stop/photo)
  devices         what is connected (``examrec devices``)
  service         `examrec serve`: the always-running recorder, idle between exams
  sdnotify        systemd's notify protocol (READY, STATUS, WATCHDOG)
  button          a hardware button (Linux input event device) mapped to pause/resume

May import core/, capture/, sensors/, muxer/ and sessions.evidence; imported by sessions.cli.
"""
