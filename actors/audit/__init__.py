"""AuditSink: chains and signs the audit log per workspace, then stores it (docs/audit.md).

`body.AuditSink` is the consumer; `actor.py` is its Ray shell; `client.py` starts it and reads through it.
"""
