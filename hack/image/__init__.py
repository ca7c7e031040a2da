"""

Modules: steps (paths, running a step), wheels, base (the Debian base), build (build and save),
size_report; __main__ runs them.
"""
