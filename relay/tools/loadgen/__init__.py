"""The load generator and lean servers `relay bench` runs beside the relay."""
