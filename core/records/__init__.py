"""What the station decided and remembers: the verdict rule and events (``verdicts``, numpy only),
the history database and its migrations, and the reports made of it. Light: no model stack, so
the history, the reports and the line links never load torch."""
