"""apilake's developer side: the local stand-ins (fake vendors, the local event source) and the CLI.

Installed in the dev environment only; never shipped in the Lambda layer.
"""
