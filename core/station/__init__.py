"""The running station: live sessions per camera (which browser feeds, which tools judge, with
which settings), the line (triggers, verdict sinks), the headless station, background jobs and
learning on the line."""
