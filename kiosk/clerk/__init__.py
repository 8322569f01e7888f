"""Clerk mode: the court side of the kiosk. Find sealed recordings, verify them, retrieve them (access on
the ledger first, then decrypt with the court's age identity), export a package anyone can re-check with
public tools, and delete by court order under a retention policy. See kiosk/clerk/court.py."""
