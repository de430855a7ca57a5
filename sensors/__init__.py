"""Sensors on the session timeline: GPS through gpsd, dual-control pedals over serial, and their replay."""
