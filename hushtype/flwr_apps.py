"""The apps ``flwr run .`` starts ([tool.flwr.app.components]): the runner wires data into the server.

The ServerApp reads the held-out users through ``keyboard_sim.federation.load_data`` (handed to it here,
so the ``server`` package never imports the device package); the ClientApp is the device's own.
"""

from __future__ import annotations

from keyboard_sim.client_app import app as client_app
from keyboard_sim.federation import load_data
from server.server_app import make_server_app

__all__ = ["server_app", "client_app"]

server_app = make_server_app(load_data)  # config from [tool.flwr.app.config] / --run-config
