"""Deployments: named model servers that run as services (``mlxk deploy``).

A deployment is a folder ``<root>/<name>/`` with ``config.json`` (validated by
:mod:`mlxk.deploy.config`) and ``logs/``. A backend (launchd, systemd, or a plain detached
process) runs ``python -m mlxk.deploy.runner``, which reads the config at each start,
pulls a Hub model the first time, and becomes ``mlxk serve`` with the flags the config
asks for. Every file a command writes lies in that deployment's own folder, except the
service file a backend installs (the plist or the user unit).
"""
