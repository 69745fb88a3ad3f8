"""Shopfloor Inspector's domain, one package per layer (a layer imports only those below it):

- ``core.store``: the stored things: the workspace, tools, their photos, the station settings;
- ``core.security``: who may change the station: roles, users, HTTPS exposure, secrets;
- ``core.engine``: the models: backbones, the one pixel pipeline, the kinds of tool, training,
  inference, validation, tool files;
- ``core.records``: verdicts and the rule that makes them, the history, reports;
- ``core.station``: live sessions, the line, the headless station, jobs, learning on the line;
- ``core.integrations``: MQTT and OPC UA.

``core.cli`` gives every operation to the shell; it imports the engine only in the commands that
run it. Nothing here imports Streamlit.
"""
