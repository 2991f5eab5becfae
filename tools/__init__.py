"""The commands. Run from a checkout as `python tools/<name>.py`; installed with pip, this folder is
`mseg_fast.tools` and each command is a console script (`mseg-<name>`, setup.py)."""
