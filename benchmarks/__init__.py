"""Benchmarks: scripts, not timed tests. ``python -m benchmarks.<name>`` prints a table of medians.

Every claim is a ratio measured side by side in one run, with the profile and the machine named
(see DESIGN.md, "Measuring"). ``benchmarks.chat`` measures image-text chat.
"""
