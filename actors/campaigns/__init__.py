"""The campaign runner (docs/campaigns.md)."""
