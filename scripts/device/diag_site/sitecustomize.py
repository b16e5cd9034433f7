"""Diagnosis only (scripts/device/diag_kit_interference.py): stamps each ``put`` of every
Transformers text streamer in this process, wall clock and the calling (generate) thread's CPU
time, and appends one JSON line per request to $H17_STEPLOG. Inert without that variable."""

import os

if os.environ.get("H17_STEPLOG"):
    import json
    import time

    import transformers.generation.streamers as _streamers

    _init = _streamers.TextIteratorStreamer.__init__

    def _stamped_init(self, *args, **kwargs):
        _init(self, *args, **kwargs)
        put, end, stamps = self.put, self.end, []

        def stamped_put(value):
            stamps.append((time.perf_counter_ns(), time.thread_time_ns()))
            return put(value)

        def stamped_end():
            with open(os.environ["H17_STEPLOG"], "a") as fh:
                fh.write(json.dumps({"stamps": stamps}) + "\n")
            return end()

        self.put, self.end = stamped_put, stamped_end

    _streamers.TextIteratorStreamer.__init__ = _stamped_init
