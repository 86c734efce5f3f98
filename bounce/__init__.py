"""The bounce service: bounce intelligence for Petrel.

Classifies SMTP replies into KumoMTA's bounce categories with layered regex rule files
(KumoMTA's format), and parses inbound bounce messages (RFC 3464 DSNs, RFC 5965 feedback
reports, RFC 3834 auto-replies and the prose bounces of common MTAs) into per-recipient
results. Serves ``BounceService`` over gRPC; ``petrel bounce classify`` and
``petrel bounce classify-reply`` do the same offline.
"""
