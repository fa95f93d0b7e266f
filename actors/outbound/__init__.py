"""The send path shared by the ingress and the runners (no Ray here)."""
