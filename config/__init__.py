"""Configuration every layer may read: the one settings object (env vars ``UPS_*``) and device choice."""
