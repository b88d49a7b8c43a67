"""Reading network definitions and weight files."""
