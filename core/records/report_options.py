"""What a report can be asked for: its name, period, shifts and export format.

Light on purpose (no pandas, no database): the command line builds its parser, and lists tools,
without loading the report engine (``core.records.reports``).
"""

REPORT_NAMES = ("yield", "pareto", "scores", "fpy")  # core.records.reports.REPORTS, in this order
DEFAULT_SHIFTS = ("06:00", "14:00", "22:00")
PERIODS = ("hour", "shift", "day")
EXPORT_FORMATS = ("csv", "parquet")
