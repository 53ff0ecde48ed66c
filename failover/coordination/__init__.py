"""How controllers share observations and agree on who acts."""
