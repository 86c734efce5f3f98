"""Real test peers shared by every test layer: SMTP sinks, a DNS server, free ports."""
