"""What the bridge, the watchdog and the simulator share: the contract between them, and common plumbing.

A program never reaches into a sibling program for these: each imports them from here.
"""
