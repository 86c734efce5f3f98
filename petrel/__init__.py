"""Petrel's shared plumbing: configuration, gRPC factories, ids, SMTP replies, events, the CLI.

Services (ingress, spool, scheduler, egress, bounce, gateway) import from here and never from
each other. Generated protobuf code lives in ``petrel.v1``.
"""

__version__ = "0.1.0"
