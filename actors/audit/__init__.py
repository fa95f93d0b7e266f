"""The audit log's consumer: chains and signs entries per workspace, then stores them (docs/audit.md)."""
