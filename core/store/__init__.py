"""The stored things: the workspace folder, tools and their versions, their photos and the station
settings, each written so that a power cut leaves the old or the new file, never half of one.
Light: no model stack."""
