"""Is the served model still right: drift statistics, drift reports and new-data detection."""
