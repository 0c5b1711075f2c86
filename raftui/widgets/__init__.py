"""Panels (one widget class per module) and the virtual line list they share."""
