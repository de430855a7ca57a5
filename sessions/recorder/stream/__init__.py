"""One stream's process, as a pipeline (after picamera2's encoder -> outputs seam):

  source threads  ->  stages                        ->  sinks
  camera, audio       stage gate (pause, banners,       segment sink (segments, rotation,
  (reopen with        pedals) -> overlay                audio interleave, fragments.jsonl,
  back-off)                                             disk-full cut), photo sink (stills)

  job            StreamJob (what the controller hands the process) and the stop line
  source_thread  one device read on its own thread into a bounded queue; reopens with back-off
  stage_gate     which frames are recorded and what the overlay shows on them
  segment_sink   the stream's MP4 segments and fragment log
  photo_sink     start-of-exam and requested stills
  check          the pre-exam check through the same sources, overlay and encoder
  process        the process body: commands in (sessions.recorder.messages), the frame loop,
                 reports out; ``run_stream`` is the process entry point

Nothing here is imported by the controller except ``job`` and ``process``.
"""
