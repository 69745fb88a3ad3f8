"""Who may change the station: roles and permissions, users and their passwords, when the station
may be exposed on the network, and where secrets are read from. Light: no model stack."""
